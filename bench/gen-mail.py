#!/usr/bin/env python3
"""Deterministically generate N realistic support e-mails as .eml files.

Copied unchanged (apart from this note) from the shared benchmark harness
(../shared/bench/gen-mail.py), so that bench/ works on a fresh clone; the same
N and seed give byte-identical files in both copies.

    gen-mail.py N OUTDIR [--seed 20241101]

Output: OUTDIR/000001.eml ... OUTDIR/NNNNNN.eml (file order == Date order, so a
reply always comes after the message it answers) and OUTDIR/manifest.jsonl
with one JSON line per message (message_id, kind, parent, charset, cte,
attachment, subject, ...) that the peer scripts use to verify ingestion.

Mix (all drawn from one seeded random.Random, so the same N and seed give
byte-identical files):
  * ~50 customer domains (Polish companies, English companies, free mail),
    1-8 people per domain, each with a stable mail-client profile.
  * Polish and English subjects/bodies; Polish mail in utf-8, iso-8859-2 or
    windows-1250, with quoted-printable, base64 or raw 8bit bodies, and
    RFC 2047 (Q or B) encoded Subject/From display names.
  * ~20% replies (In-Reply-To/References to an earlier generated message,
    quoted parent text, Re:/Odp:/RE: subject prefix).
  * ~10% with one attachment of 10-200 KB (pdf/png/jpg/docx/txt/xlsx/zip,
    some with RFC 2231 encoded Polish file names).
  * ~3% auto-replies (Auto-Submitted: auto-replied, out-of-office text).
  * ~23% multipart/alternative with an HTML part; ~10% with Cc.
  * Unique Message-IDs, Dates spread over November 2024 (business-hours bias).
Only the standard library is used.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import quopri
import random
import sys
from email.charset import BASE64, QP, Charset
from email.header import Header

# --------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------

PL_COMPANY_DOMAINS = [
    "kowalski-transport.pl", "budmax.com.pl", "polmlek-serwis.pl", "agro-nowak.pl",
    "drukarnia-wisla.pl", "elektro-dab.pl", "meblowy-raj.pl", "zielona-apteka.pl",
    "biuro-rachunkowe-zak.pl", "hurtownia-orzel.pl", "gdansk-port-logistyka.pl",
    "krakowskie-okna.pl", "lodzka-tkanina.com.pl", "poznanskie-piekarnie.pl",
    "slask-stal.pl", "mazury-turystyka.pl", "szkola-jezykowa-lingwa.pl",
    "przychodnia-zdrowie.pl", "gmina-zabki.pl", "auto-czesci-wrobel.pl",
]
PL_FREEMAIL = ["wp.pl", "onet.pl", "o2.pl", "interia.pl", "gazeta.pl", "op.pl"]
EN_COMPANY_DOMAINS = [
    "acme-logistics.com", "brightpath.io", "northwind-traders.co.uk", "bluefin-analytics.com",
    "greenleaf-foods.com", "harbor-legal.com", "pinnacle-retail.com", "quantum-hr.io",
    "riverside-clinic.org", "summit-outdoor.com", "tidewater-shipping.com", "vertex-labs.dev",
    "oakridge-school.org", "crescent-media.co.uk", "ironbridge-eng.com", "lumen-software.com",
    "maple-insurance.ca", "nimbus-cloud.net",
]
INTL_FREEMAIL = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "hotmail.co.uk"]

PL_FIRST_M = ["Łukasz", "Paweł", "Michał", "Wojciech", "Józef", "Grzegorz", "Piotr", "Krzysztof",
              "Tomasz", "Marcin", "Jarosław", "Zbigniew", "Bartłomiej", "Maciej", "Przemysław"]
PL_FIRST_F = ["Małgorzata", "Agnieszka", "Zofia", "Ewa", "Anna", "Katarzyna", "Joanna",
              "Beata", "Żaneta", "Urszula", "Dorota", "Jadwiga", "Elżbieta", "Grażyna"]
PL_LAST = ["Kowalski", "Nowak", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski",
           "Zieliński", "Szymański", "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur",
           "Krawczyk", "Piotrowski", "Grabowski", "Pawłowski", "Michalski", "Król", "Wieczorek",
           "Jabłoński", "Wróbel", "Zając", "Stępień", "Górski", "Sikora", "Ryszczyński"]
EN_FIRST = ["John", "Emma", "Oliver", "Sophia", "James", "Amelia", "William", "Isabella",
            "Henry", "Charlotte", "Lucas", "Mia", "Daniel", "Harper", "Ethan", "Grace"]
EN_LAST = ["Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas",
           "Roberts", "Walker", "Wright", "Thompson", "White", "Hughes", "Edwards", "Green",
           "O'Neill", "MacDonald"]
PL_CITIES = ["Warszawa", "Kraków", "Łódź", "Wrocław", "Poznań", "Gdańsk", "Szczecin",
             "Bydgoszcz", "Lublin", "Białystok", "Katowice", "Gdynia", "Częstochowa", "Rzeszów"]

PL_SUBJECTS = [
    "Problem z logowaniem do panelu klienta",
    "Błąd przy generowaniu faktury {inv}",
    "Nie mogę zresetować hasła",
    "Prośba o zmianę danych do faktury",
    "Zamówienie {order} - brak potwierdzenia wysyłki",
    "Reklamacja: uszkodzona przesyłka {order}",
    "Pytanie o cennik usług na {year} rok",
    "Awaria drukarki w oddziale {city}",
    "Zgłoszenie: system nie działa od rana",
    "PILNE! Brak dostępu do skrzynki pocztowej",
    "Zmiana adresu dostawy dla zamówienia {order}",
    "Dostęp do VPN dla nowego pracownika",
    "Prośba o korektę faktury {inv}",
    "Wolne działanie aplikacji mobilnej",
    "Eksport danych do pliku CSV nie działa",
    "Jak dodać nowego użytkownika?",
    "Zwrot towaru – zamówienie {order}",
    "Płatność odrzucona przy próbie zakupu",
    "Certyfikat SSL wygasł na stronie {domain}",
    "Błąd 500 po aktualizacji wtyczki",
    "Brak możliwości pobrania raportu miesięcznego",
    "Zmiana osoby kontaktowej w umowie",
    "Źle naliczony rabat w zamówieniu {order}",
    "Dwukrotnie pobrana opłata za abonament",
    "Wniosek o przedłużenie licencji do {date}",
    "Nie przychodzą powiadomienia e-mail",
    "Pytanie dotyczące integracji z KSeF",
    "Usunięcie konta i danych osobowych (RODO)",
]
EN_SUBJECTS = [
    "Cannot log in to the customer portal",
    "Invoice {inv} shows the wrong amount",
    "Password reset link not working",
    "Order {order} not delivered yet",
    "Request to update billing address",
    "API returns 502 Bad Gateway intermittently",
    "Question about pricing for {seats} seats",
    "URGENT: production outage since {time}",
    "Refund request for order {order}",
    "Two-factor authentication locked me out",
    "Export to CSV truncates long fields",
    "How do I add a new team member?",
    "Email notifications stopped arriving",
    "SSL certificate warning on {domain}",
    "Feature request: dark mode for the dashboard",
    "Webhook deliveries failing with timeout",
    "Cancel my subscription please",
    "Data import stuck at 99%",
    "Wrong VAT rate applied to invoice {inv}",
    "Mobile app crashes on startup (v{ver})",
    "Need a copy of our signed contract",
    "SSO login loop after the latest update",
]

PL_GREET = ["Dzień dobry,", "Witam,", "Szanowni Państwo,", "Dzień dobry Państwu,", "Cześć,"]
PL_CLOSE = ["Pozdrawiam", "Z poważaniem", "Pozdrawiam serdecznie", "Z góry dziękuję za pomoc.\nPozdrawiam",
            "Łączę pozdrowienia"]
PL_SENT = [
    "Od wczoraj nie mogę zalogować się do systemu, pojawia się komunikat o nieprawidłowym haśle.",
    "Próbowałem już wyczyścić pamięć podręczną przeglądarki, ale nic to nie dało.",
    "Problem dotyczy wszystkich pracowników w naszym oddziale w mieście {city}.",
    "W załączeniu przesyłam zrzut ekranu z komunikatem błędu.",
    "Faktura {inv} zawiera błędną kwotę – powinno być {amount} zł brutto.",
    "Proszę o pilny kontakt, ponieważ blokuje to naszą pracę.",
    "Czy mogą Państwo sprawdzić, co się dzieje z zamówieniem {order}?",
    "Przesyłka dotarła uszkodzona, karton był zgnieciony, a część towaru jest porysowana.",
    "Zależy nam na szybkim rozwiązaniu, bo w piątek mamy zamknięcie miesiąca.",
    "Nasz numer klienta to {cust}.",
    "Błąd występuje zarówno w Chrome, jak i w Firefoksie.",
    "Chcielibyśmy zmienić adres do korespondencji na ul. Świętokrzyska {num}, {city}.",
    "Czy istnieje możliwość wystawienia faktury korygującej?",
    "Aplikacja zawiesza się przy próbie zapisania zmian.",
    "Po aktualizacji do najnowszej wersji raporty generują się bardzo długo, nawet kilka minut.",
    "Proszę o informację, jakie dokumenty są potrzebne do zwrotu towaru.",
    "Płatność kartą została odrzucona, mimo że środki są na koncie.",
    "Zauważyliśmy, że opłata za abonament została pobrana dwukrotnie w tym miesiącu.",
    "Czy mogę prosić o przesłanie instrukcji dodawania nowych użytkowników?",
    "Komunikat brzmi: „Wystąpił nieoczekiwany błąd. Spróbuj ponownie później.”",
    "Wcześniej wszystko działało bez zarzutu.",
    "Dziękuję za szybką odpowiedź, niestety problem nadal występuje.",
    "Jeżeli potrzebują Państwo dodatkowych informacji, jestem do dyspozycji pod numerem {phone}.",
    "Żółć gęślą jaźń – tak wygląda tekst po eksporcie, polskie znaki są zamienione na krzaczki.",
    "Zgodnie z umową czas reakcji wynosi 4 godziny, a minęły już dwa dni.",
]
PL_FOLLOWUP = [
    "Czy jest jakaś aktualizacja w tej sprawie?",
    "Uprzejmie przypominam o moim zgłoszeniu.",
    "Dziękuję, teraz działa poprawnie.",
    "Niestety problem wrócił po restarcie komputera.",
    "Przesyłam dodatkowe informacje, o które Państwo prosili.",
    "Sprawdziłem jeszcze raz – błąd pojawia się tylko przy większych plikach.",
    "Proszę o telefon, łatwiej będzie to wyjaśnić.",
]
EN_GREET = ["Hi,", "Hello,", "Hello support team,", "Dear Sir or Madam,", "Hi there,", "Good morning,"]
EN_CLOSE = ["Best regards", "Kind regards", "Thanks", "Thanks in advance", "Cheers", "Regards"]
EN_SENT = [
    "Since yesterday I am unable to log in; the portal says my password is invalid.",
    "I already cleared the browser cache and tried another browser, with no luck.",
    "This affects everyone in our {city} office.",
    "Please find a screenshot of the error message attached.",
    "Invoice {inv} lists {amount} EUR but our agreed price was lower.",
    "Could you please look into this as a matter of urgency?",
    "Can you check the status of order {order}? The tracking page shows nothing.",
    "The parcel arrived damaged and two items are scratched.",
    "We need this resolved before the end of the quarter.",
    "Our customer number is {cust}.",
    "The issue happens in both Chrome and Safari.",
    "Please update our billing address to {num} Harbour Street, {city}.",
    "Is it possible to issue a corrected invoice?",
    "The app freezes whenever I try to save changes.",
    "After the latest update, reports take several minutes to load.",
    "What documents do you need for a return?",
    "My card payment was declined although the card works elsewhere.",
    "We were charged twice for the subscription this month.",
    "Could you send instructions for adding new users?",
    'The error reads: "An unexpected error occurred. Please try again later."',
    "Everything worked fine until last week.",
    "Thanks for the quick reply, unfortunately the problem persists.",
    "If you need more details, call me at {phone}.",
    "Our SLA says 4 hours response time and it has been two days.",
]
EN_FOLLOWUP = [
    "Any update on this?",
    "Just following up on my previous message.",
    "Thanks, it works now.",
    "Unfortunately the problem is back after a reboot.",
    "Here is the additional information you asked for.",
    "I checked again - it only happens with larger files.",
    "Could someone give me a call? It would be easier to explain.",
]
LOG_LINES = [
    "{ts} ERROR [worker-{n}] com.example.sync.Job - Connection reset by peer",
    "{ts} WARN  [http-nio-8080-exec-{n}] o.a.c.c.C.[.[localhost] - Request timed out after 30000 ms",
    "{ts} INFO  [main] Application started in {n}.{n}s",
    "{ts} ERROR [scheduler] Failed to export report id={n}: java.lang.OutOfMemoryError: Java heap space",
    "Traceback (most recent call last):",
    '  File "/srv/app/views.py", line {n}, in export',
    "    raise ExportError('row %d too long' % i)",
    "{ts} DEBUG [pool-{n}] Retrying request (attempt {n}/5)",
]

OOO_PL = ("Dzień dobry,\n\ndziękuję za wiadomość. Jestem na urlopie do {date} i mam ograniczony "
          "dostęp do poczty.\nW pilnych sprawach proszę kontaktować się z {other}.\n\nPozdrawiam\n{name}\n")
OOO_EN = ("Hello,\n\nThank you for your email. I am out of the office until {date} with limited "
          "access to email.\nFor urgent matters please contact {other}.\n\nBest regards,\n{name}\n")

# mail-client profiles: (name, header lines, html probability)
PROFILES = [
    ("thunderbird", ["User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.5.1"], 0.05),
    ("outlook", ["X-Mailer: Microsoft Outlook 16.0", "Thread-Index: {tindex}", "Content-Language: {lang}"], 0.9),
    ("gmail", [], 0.95),
    ("apple", ["X-Mailer: Apple Mail (2.3731.700.6)"], 0.6),
    ("roundcube", ["User-Agent: Roundcube Webmail/1.6.5"], 0.1),
    ("wp", ["X-Mailer: WP Poczta (v 2.17)", "X-WP-AV: skaner antywirusowy Poczty Wirtualnej Polski"], 0.3),
    ("oldoutlook", ["X-Mailer: Microsoft Outlook Express 6.00.2900.5931", "X-MimeOLE: Produced By Microsoft MimeOLE V6.00.2900.6157"], 0.5),
]

ATTACH_KINDS = [
    # (ext, mime, filename templates)
    ("pdf", "application/pdf", ["faktura_{inv_s}.pdf", "invoice_{inv_s}.pdf", "umowa_podpisana.pdf", "protokół_reklamacji.pdf"]),
    ("png", "image/png", ["zrzut_ekranu.png", "screenshot.png", "Zrzut ekranu 2024-11-{dd} o {hh}.{mm}.png", "error.png"]),
    ("jpg", "image/jpeg", ["IMG_{num}.jpg", "zdjęcie_przesyłki.jpg", "photo.jpg"]),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", ["wniosek.docx", "request_form.docx"]),
    ("txt", "text/plain", ["log_błędu.txt", "app.log.txt", "error_log.txt"]),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ["zestawienie_{year}.xlsx", "export.xlsx"]),
    ("zip", "application/zip", ["logs.zip", "załączniki.zip"]),
]
ATTACH_WEIGHTS = [30, 25, 12, 8, 12, 8, 5]

HELPDESK_ADDR = "support@helpdesk.example.com"
TO_NAMES = ["Support", None, "\"Helpdesk\"", "Obsługa klienta"]  # display names for To:

ASCII_FOLD = str.maketrans({
    "ą": "a", "ć": "c", "ę": "e", "ł": "l", "ń": "n", "ó": "o", "ś": "s", "ź": "z", "ż": "z",
    "Ą": "A", "Ć": "C", "Ę": "E", "Ł": "L", "Ń": "N", "Ó": "O", "Ś": "S", "Ź": "Z", "Ż": "Z",
    "'": "",
})
# characters that iso-8859-2 lacks: what a real client would substitute
LATIN2_FIX = str.maketrans({"„": '"', "”": '"', "“": '"', "–": "-", "—": "-", "…": "...", "’": "'"})
ASCII_FIX = str.maketrans({"„": '"', "”": '"', "“": '"', "–": "-", "—": "-", "…": "...", "’": "'"})


def fold_ascii(s: str) -> str:
    return s.translate(ASCII_FOLD)


class Gen:
    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.used_ids: set[str] = set()
        self._build_customers()

    # -- customers --------------------------------------------------------
    def _build_customers(self):
        r = self.r
        domains = ([(d, "pl", "company") for d in PL_COMPANY_DOMAINS]
                   + [(d, "en", "company") for d in EN_COMPANY_DOMAINS]
                   + [(d, "pl", "free") for d in PL_FREEMAIL]
                   + [(d, "mixed", "free") for d in INTL_FREEMAIL])
        self.domains = [d for d, _, _ in domains]
        self.customers = []
        for dom, lang, kind in domains:
            company = None
            if kind == "company":
                base = dom.split(".")[0].replace("-", " ").title()
                company = base + (" Sp. z o.o." if lang == "pl" else " Ltd")
            for _ in range(r.randint(1, 8)):
                clang = lang if lang != "mixed" else ("pl" if r.random() < 0.4 else "en")
                if clang == "pl":
                    female = r.random() < 0.5
                    first = r.choice(PL_FIRST_F if female else PL_FIRST_M)
                    last = r.choice(PL_LAST)
                    if female and last.endswith(("ski", "cki", "dzki")):
                        last = last[:-1] + "a"
                    charset = r.choices(["utf-8", "iso-8859-2", "windows-1250"], [70, 18, 12])[0]
                else:
                    first, last = r.choice(EN_FIRST), r.choice(EN_LAST)
                    charset = r.choices(["us-ascii", "utf-8"], [40, 60])[0]
                if charset == "windows-1250":
                    profile = r.choice([PROFILES[1], PROFILES[6]])
                elif dom == "wp.pl":
                    profile = PROFILES[5]
                elif dom == "gmail.com":
                    profile = PROFILES[2]
                else:
                    profile = r.choice(PROFILES[:5])
                local = r.choice(["{f}.{l}", "{f0}{l}", "{f}", "{l}.{f}", "{f}{n}"]).format(
                    f=fold_ascii(first).lower(), l=fold_ascii(last).lower(), f0=fold_ascii(first)[0].lower(),
                    n=r.randint(1, 99))
                self.customers.append({
                    "name": f"{first} {last}", "addr": f"{local}@{dom}", "domain": dom,
                    "lang": clang, "charset": charset, "profile": profile, "company": company,
                    "phone": (f"+48 {r.randint(500, 799)} {r.randint(100, 999)} {r.randint(100, 999)}"
                              if clang == "pl" else f"+44 20 {r.randint(1000, 9999)} {r.randint(1000, 9999)}"),
                    "cust": f"K-{r.randint(10000, 99999)}",
                })

    # -- helpers ----------------------------------------------------------
    def fill(self, tpl: str, c: dict) -> str:
        r = self.r
        return tpl.format(
            inv=f"FV/{r.randint(1, 999)}/11/2024" if c["lang"] == "pl" else f"INV-2024-{r.randint(1000, 9999)}",
            order=f"{r.randint(100000, 999999)}", year=r.choice([2024, 2025]),
            city=r.choice(PL_CITIES) if c["lang"] == "pl" else r.choice(["London", "Leeds", "Dublin", "Bristol", "Boston"]),
            domain=c["domain"] if not c["company"] is None else "sklep.example.pl",
            date=f"{r.randint(1, 28)}.12.2024", seats=r.choice([5, 10, 25, 50, 120]),
            time=f"{r.randint(6, 11)}:{r.randint(0, 59):02d}", ver=f"{r.randint(2, 5)}.{r.randint(0, 19)}.{r.randint(0, 9)}",
            amount=f"{r.randint(100, 99999)},{r.randint(0, 99):02d}", cust=c["cust"], num=r.randint(1, 250),
            phone=c["phone"],
        )

    def new_msgid(self, c: dict, when: dt.datetime) -> str:
        r = self.r
        while True:
            prof = c["profile"][0]
            if prof == "gmail":
                mid = "<CA" + base64.b64encode(r.randbytes(30), b"+_").decode().rstrip("=") + "@mail.gmail.com>"
            elif prof in ("outlook", "oldoutlook"):
                mid = f"<{r.randbytes(16).hex().upper()}@{c['domain']}>"
            elif prof == "apple":
                mid = f"<{r.randbytes(4).hex().upper()}-{r.randbytes(2).hex().upper()}-{r.randbytes(2).hex().upper()}-{r.randbytes(6).hex().upper()}@{c['domain']}>"
            else:
                mid = f"<{when.strftime('%Y%m%d%H%M%S')}.{r.randbytes(8).hex()}@{c['domain']}>"
            if mid not in self.used_ids:
                self.used_ids.add(mid)
                return mid

    def enc_words(self, text: str, charset: str) -> str:
        """RFC 2047-encode `text` if non-ASCII (Q or B, like real clients)."""
        try:
            text.encode("ascii")
            return text
        except UnicodeEncodeError:
            pass
        if charset == "us-ascii":
            charset = "utf-8"
        if charset == "iso-8859-2":
            text = text.translate(LATIN2_FIX)
        cs = Charset(charset)
        cs.header_encoding = QP if self.r.random() < 0.6 else BASE64
        return Header(text, cs, maxlinelen=76, header_name="Subject").encode(linesep="\n")

    def fmt_addr(self, c: dict) -> str:
        name = c["name"]
        try:
            name.encode("ascii")
            if any(ch in name for ch in "'.,"):
                name = '"' + name + '"'
            return f"{name} <{c['addr']}>"
        except UnicodeEncodeError:
            return f"{self.enc_words(name, c['charset'])} <{c['addr']}>"

    def fmt_to(self, name, charset: str) -> str:
        if name is None:
            return HELPDESK_ADDR
        return f"{self.enc_words(name, charset)} <{HELPDESK_ADDR}>"

    def body_bytes(self, text: str, charset: str, cte: str) -> bytes:
        if charset == "iso-8859-2":
            text = text.translate(LATIN2_FIX)
        elif charset == "us-ascii":
            text = text.translate(ASCII_FIX)
        data = text.encode(charset, errors="replace")
        if cte == "base64":
            return base64.encodebytes(data)
        if cte == "quoted-printable":
            return quopri.encodestring(data)
        return data  # 7bit / 8bit

    def text_part(self, text: str, subtype: str, charset: str, cte: str) -> bytes:
        extra = "; format=flowed" if subtype == "plain" and self.r.random() < 0.3 else ""
        hdr = (f"Content-Type: text/{subtype}; charset=\"{charset}\"{extra}\n"
               f"Content-Transfer-Encoding: {cte}\n\n").encode("ascii")
        body = self.body_bytes(text, charset, cte)
        if not body.endswith(b"\n"):
            body += b"\n"
        return hdr + body

    def html_of(self, text: str, outlook: bool) -> str:
        paras = [p for p in text.split("\n\n") if p.strip()]
        def esc(s):
            return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        style = (' style="margin:0cm;font-size:11.0pt;font-family:&quot;Calibri&quot;,sans-serif"'
                 if outlook else "")
        inner = "\n".join(f"<p{style}>" + "<br>\n".join(esc(l) for l in p.split("\n")) + "</p>" for p in paras)
        head = ('<head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
                '<style><!-- p.MsoNormal {margin:0cm;} --></style></head>' if outlook else "<head></head>")
        return f"<html>{head}<body><div dir=\"ltr\">\n{inner}\n</div></body></html>\n"

    def boundary(self) -> str:
        return "----=_Part_" + self.r.randbytes(12).hex()

    def attachment(self, c: dict) -> tuple[bytes, dict]:
        r = self.r
        ext, mime, names = r.choices(ATTACH_KINDS, ATTACH_WEIGHTS)[0]
        name = r.choice(names).format(inv_s=f"{r.randint(1, 999)}_11_2024", dd=f"{r.randint(1, 30):02d}",
                                      hh=r.randint(8, 17), mm=f"{r.randint(0, 59):02d}",
                                      num=r.randint(1000, 9999), year=2024)
        size = r.randint(10 * 1024, 200 * 1024)
        if ext == "txt":
            lines = []
            total = 0
            while total < size:
                ts = f"2024-11-{r.randint(1, 30):02d} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d},{r.randint(0, 999):03d}"
                line = r.choice(LOG_LINES).format(ts=ts, n=r.randint(1, 64))
                lines.append(line)
                total += len(line) + 1
            data = ("\n".join(lines) + "\n").encode()[:size]
        else:
            magic = {"pdf": b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n", "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
                     "jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "docx": b"PK\x03\x04\x14\x00\x06\x00",
                     "xlsx": b"PK\x03\x04\x14\x00\x06\x00", "zip": b"PK\x03\x04\x14\x00\x00\x00"}[ext]
            data = magic + r.randbytes(size - len(magic))
        try:
            name.encode("ascii")
            disp = f'attachment; filename="{name}"'
            ctname = f'; name="{name}"'
        except UnicodeEncodeError:
            from urllib.parse import quote
            disp = f"attachment; filename*=utf-8''{quote(name)}"
            ctname = f'; name="{Header(name, "utf-8").encode()}"'
        hdr = (f"Content-Type: {mime}{ctname}\nContent-Disposition: {disp}\n"
               f"Content-Transfer-Encoding: base64\n\n").encode("ascii")
        return hdr + base64.encodebytes(data), {"name": name, "size": size, "ext": ext}

    def multipart(self, subtype: str, parts: list[bytes]) -> tuple[str, bytes]:
        b = self.boundary()
        out = b"This is a multi-part message in MIME format.\n\n" if self.r.random() < 0.5 else b""
        for p in parts:
            out += b"--" + b.encode() + b"\n" + p
            if not p.endswith(b"\n"):
                out += b"\n"
        out += b"--" + b.encode() + b"--\n"
        return f'multipart/{subtype};\n\tboundary="{b}"', out

    # -- one message ------------------------------------------------------
    def make(self, idx: int, when: dt.datetime, history: list[dict]) -> tuple[bytes, dict]:
        r = self.r
        roll = r.random()
        parent = None
        kind = "new"
        candidates = [h for h in history if h["kind"] != "autoreply"]
        if roll < 0.03 and history:
            kind = "autoreply"
        elif roll < 0.23 and candidates:
            kind = "reply"
            # prefer recent threads
            k = min(len(candidates), 200)
            parent = candidates[-1 - int(r.triangular(0, k - 1, 0))] if k > 1 else candidates[0]

        if kind == "reply":
            pc = parent["cust"]
            if r.random() < 0.8:
                c = pc
            else:
                same = [x for x in self.customers if x["domain"] == pc["domain"] and x is not pc]
                c = r.choice(same) if same else pc
        else:
            c = r.choice(self.customers)
        lang, charset, profile = c["lang"], c["charset"], c["profile"]
        prof_name = profile[0]

        # subject + body text
        if kind == "autoreply":
            base_subj = r.choice(history)["subject_root"]
            if lang == "pl":
                subj = r.choice(["Odpowiedź automatyczna: ", "Automatyczna odpowiedź: ", "Automatic reply: "]) + f"[support-{r.randint(1, idx + 1)}] " + base_subj
                body = OOO_PL
            else:
                subj = r.choice(["Automatic reply: ", "Out of Office: "]) + f"[support-{r.randint(1, idx + 1)}] " + base_subj
                body = OOO_EN
            other = r.choice(self.customers)
            body = body.format(date=f"{r.randint(1, 28)}.12.2024" if lang == "pl" else f"December {r.randint(1, 28)}",
                               other=f"{other['name']} ({other['addr']})", name=c["name"])
            subject_root = base_subj
        elif kind == "reply":
            subject_root = parent["subject_root"]
            prefix = r.choice(["Re: ", "RE: ", "Odp: ", "ODP: "] if lang == "pl" else ["Re: ", "RE: ", "Re: Re: "])
            subj = prefix + subject_root
            lines = [r.choice(PL_FOLLOWUP if lang == "pl" else EN_FOLLOWUP)]
            if r.random() < 0.5:
                lines.append(self.fill(r.choice(PL_SENT if lang == "pl" else EN_SENT), c))
            body = self.compose(c, lines)
            # quoted parent
            pdate = parent["date"]
            if lang == "pl":
                qhdr = f"W dniu {pdate.strftime('%d.%m.%Y %H:%M')}, {parent['cust']['name']} pisze:"
            else:
                qhdr = f"On {pdate.strftime('%a, %b %d, %Y at %H:%M')} {parent['cust']['name']} <{parent['cust']['addr']}> wrote:"
            quoted = "\n".join(("> " + l) if l else ">" for l in parent["text"].split("\n")[:60])
            body = body + "\n" + qhdr + "\n" + quoted + "\n"
        else:
            subject_root = self.fill(r.choice(PL_SUBJECTS if lang == "pl" else EN_SUBJECTS), c)
            subj = subject_root
            n = r.choices([1, 2, 3, 4, 6], [15, 35, 30, 15, 5])[0]
            pool = PL_SENT if lang == "pl" else EN_SENT
            lines = [self.fill(s, c) for s in r.sample(pool, n)]
            body = self.compose(c, lines)
            if r.random() < 0.06:  # pasted log excerpt -> long body
                logl = []
                for _ in range(r.randint(20, 300)):
                    ts = f"2024-11-{r.randint(1, 30):02d} {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
                    logl.append(r.choice(LOG_LINES).format(ts=ts, n=r.randint(1, 64)))
                body += "\n-- log --\n" + "\n".join(logl) + "\n"

        # body encoding
        if charset == "us-ascii":
            cte = "7bit"
        elif charset == "utf-8":
            cte = r.choices(["base64", "quoted-printable", "8bit"], [35, 45, 20])[0]
        else:
            cte = r.choices(["quoted-printable", "8bit"], [55, 45])[0]
        if cte == "7bit":
            try:
                body.translate(ASCII_FIX).encode("ascii")
            except UnicodeEncodeError:
                charset, cte = "utf-8", "quoted-printable"
        html = kind != "autoreply" and r.random() < profile[2] * 0.45
        attach = kind != "autoreply" and r.random() < 0.10

        plain = self.text_part(body, "plain", charset, cte)
        att_meta = None
        if html:
            hcte = "quoted-printable" if cte in ("7bit", "8bit") else cte
            hcs = charset if charset != "us-ascii" else "utf-8"
            alt_ct, alt_body = self.multipart("alternative", [plain, self.text_part(self.html_of(body, prof_name == "outlook"), "html", hcs, hcte)])
            content = f"Content-Type: {alt_ct}\n\n".encode() + alt_body
        else:
            content = plain
        if attach:
            att, att_meta = self.attachment(c)
            ct, mbody = self.multipart("mixed", [content, att])
            top_ct, top_body = ct, mbody
        elif html:
            top_ct, top_body = alt_ct, alt_body
        else:
            top_ct, top_body = None, plain

        # headers
        msgid = self.new_msgid(c, when)
        tz = dt.timezone(dt.timedelta(hours=1)) if lang == "pl" else r.choice(
            [dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5)), dt.timezone(dt.timedelta(hours=1))])
        local = when.astimezone(tz)
        date_hdr = local.strftime("%a, %d %b %Y %H:%M:%S %z")
        rcv_when = (when + dt.timedelta(seconds=r.randint(1, 40))).astimezone(dt.timezone(dt.timedelta(hours=1)))
        ip = f"{r.choice(['203.0.113', '198.51.100', '192.0.2'])}.{r.randint(1, 254)}"
        hdrs = [
            f"Return-Path: <{c['addr']}>",
            f"Delivered-To: {HELPDESK_ADDR}",
            f"Received: from mail.{c['domain']} (mail.{c['domain']} [{ip}])\n\tby mx1.helpdesk.example.com (Postfix) with ESMTPS id {r.randbytes(5).hex().upper()}\n\tfor <{HELPDESK_ADDR}>; {rcv_when.strftime('%a, %d %b %Y %H:%M:%S %z')}",
        ]
        if prof_name in ("gmail", "outlook") and r.random() < 0.8:
            sig = base64.b64encode(r.randbytes(256)).decode()
            bh = base64.b64encode(r.randbytes(32)).decode()
            hdrs.append("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\n\td=" + c["domain"]
                        + "; s=s" + str(r.randint(1, 9)) + "; t=" + str(int(when.timestamp()))
                        + ";\n\th=from:to:subject:date:message-id:mime-version;\n\tbh=" + bh
                        + ";\n\tb=" + "\n\t ".join(sig[i:i + 70] for i in range(0, len(sig), 70)))
        hdrs += [
            f"From: {self.fmt_addr(c)}",
            f"To: {self.fmt_to(r.choice(TO_NAMES) if lang == 'pl' else r.choice(TO_NAMES[:3]), charset)}",
        ]
        if kind != "autoreply" and r.random() < 0.10:
            same = [x for x in self.customers if x["domain"] == c["domain"] and x is not c]
            if same:
                hdrs.append(f"Cc: {self.fmt_addr(r.choice(same))}")
        hdrs += [
            f"Subject: {self.enc_words(subj, charset)}",
            f"Date: {date_hdr}",
            f"Message-ID: {msgid}",
        ]
        refs: list[str] = []
        if kind == "reply":
            refs = (parent["refs"] + [parent["msgid"]])[-10:]
            hdrs.append(f"In-Reply-To: {parent['msgid']}")
            hdrs.append("References: " + "\n\t".join(refs))
        if kind == "autoreply":
            hdrs.append(f"In-Reply-To: <{r.randbytes(10).hex()}@helpdesk.example.com>")
            hdrs.append("Auto-Submitted: auto-replied")
            if prof_name in ("outlook", "oldoutlook"):
                hdrs.append("X-Auto-Response-Suppress: All")
        if r.random() < 0.04 and kind == "new":
            hdrs.append(r.choice(["Importance: high", "X-Priority: 1 (Highest)", "Priority: urgent"]))
        for h in profile[1]:
            hdrs.append(h.format(tindex=base64.b64encode(r.randbytes(22)).decode(), lang="pl-PL" if lang == "pl" else "en-US"))
        hdrs.append("MIME-Version: 1.0")
        raw = "\n".join(hdrs).encode("ascii") + b"\n"
        if top_ct is None:
            raw += top_body  # plain part carries its own Content-Type/CTE headers
        else:
            raw += f"Content-Type: {top_ct}\n\n".encode() + top_body

        meta = {
            "msgid": msgid, "kind": kind, "cust": c, "date": local, "subject_root": subject_root,
            "text": body, "refs": refs,
        }
        manifest = {
            "message_id": msgid, "kind": kind, "parent": parent["msgid"] if parent else None,
            "thread_root": (parent["thread_root"] if parent else msgid), "lang": lang, "charset": charset,
            "cte": cte, "html": bool(html), "attachment": att_meta, "subject": subj,
            "from": c["addr"], "date": date_hdr, "bytes": len(raw),
        }
        meta["thread_root"] = manifest["thread_root"]
        return raw, meta, manifest

    def compose(self, c: dict, lines: list[str]) -> str:
        r = self.r
        pl = c["lang"] == "pl"
        greet = r.choice(PL_GREET if pl else EN_GREET)
        paras = []
        cur = []
        for s in lines:
            cur.append(s)
            if r.random() < 0.45:
                paras.append(" ".join(cur))
                cur = []
        if cur:
            paras.append(" ".join(cur))
        close = r.choice(PL_CLOSE if pl else EN_CLOSE)
        sig = [c["name"]]
        if c["company"]:
            sig.append(c["company"])
        if r.random() < 0.6:
            sig.append(("tel. " if pl else "Tel: ") + c["phone"])
        text = greet + "\n\n" + "\n\n".join(paras) + "\n\n" + close + "\n" + "\n".join(sig) + "\n"
        if r.random() < 0.25:
            text += "\n-- \n" + ("Wiadomość wysłana z mojego telefonu." if pl else "Sent from my phone") + "\n"
        return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=20241101)
    a = ap.parse_args()

    os.makedirs(a.outdir, exist_ok=True)
    for f in os.listdir(a.outdir):
        if f.endswith(".eml") or f == "manifest.jsonl":
            os.unlink(os.path.join(a.outdir, f))

    g = Gen(a.seed)
    start = dt.datetime(2024, 11, 1, tzinfo=dt.timezone.utc)
    times = []
    for _ in range(a.n):
        day = g.r.randrange(30)
        hour = g.r.choices(range(24), [1, 1, 1, 1, 1, 2, 4, 8, 14, 16, 16, 15, 12, 14, 15, 14, 12, 8, 5, 4, 3, 2, 2, 1])[0]
        times.append(start + dt.timedelta(days=day, hours=hour - 1, minutes=g.r.randrange(60), seconds=g.r.randrange(60)))
    times.sort()

    history: list[dict] = []
    counts = {"new": 0, "reply": 0, "autoreply": 0, "attachment": 0, "html": 0}
    charsets: dict[str, int] = {}
    total = 0
    with open(os.path.join(a.outdir, "manifest.jsonl"), "w", encoding="utf-8") as mf:
        for i, when in enumerate(times, 1):
            raw, meta, man = g.make(i, when, history)
            name = f"{i:06d}.eml"
            with open(os.path.join(a.outdir, name), "wb") as f:
                f.write(raw)
            man = {"file": name, **man}
            mf.write(json.dumps(man, ensure_ascii=False) + "\n")
            history.append(meta)
            counts[man["kind"]] += 1
            counts["attachment"] += man["attachment"] is not None
            counts["html"] += man["html"]
            key = f"{man['charset']}/{man['cte']}"
            charsets[key] = charsets.get(key, 0) + 1
            total += len(raw)
    print(f"generated {a.n} messages in {a.outdir} ({total / 1e6:.1f} MB, seed {a.seed}, "
          f"{len(g.customers)} senders in {len(g.domains)} domains)")
    print("  kinds: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print("  charset/cte: " + ", ".join(f"{k}={v}" for k, v in sorted(charsets.items())))


if __name__ == "__main__":
    sys.exit(main())
