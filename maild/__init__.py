"""maild: a support mailbox turned into a ticket queue."""


def installed_version(package: str, missing: str = "?") -> str:
    """A package's version from its metadata, without importing the package: caches kept on disk
    (compiled templates, holiday tables) name the version they were built with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return missing
