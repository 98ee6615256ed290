"""maild: a support mailbox turned into a ticket queue."""
