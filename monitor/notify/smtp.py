"""SMTP delivery (STARTTLS, implicit TLS or plain; optional login) with smtplib.

The message is multipart/alternative: text/plain, then a multipart/related holding the HTML and its
PNG charts as inline parts with Content-IDs (mail clients block data: URIs). Server replies 4xx and
connection problems are transient; 5xx replies (550 mailbox unavailable, 535 bad login) are permanent.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from monitor.config import Smtp

from . import Email, NotifyError


def build_message(email: Email) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = email.sender
    msg["To"] = ", ".join(email.to)
    msg["Subject"] = email.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=email.sender.rsplit("@", 1)[-1] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office replies stay away
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(html_part, EmailMessage)
    for cid, png in email.images.items():
        html_part.add_related(png, "image", "png", cid=f"<{cid}>", filename=f"{cid}.png")
    return msg


class SmtpNotifier:
    name = "smtp"

    def __init__(self, settings: Smtp) -> None:
        self.settings = settings

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def send(self, email: Email) -> None:
        s = self.settings
        where = f"SMTP {s.host}:{s.port}"
        try:
            if s.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                        context=self._context())
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            with client:
                if s.security == "starttls":
                    client.starttls(context=self._context())
                if s.username and s.password:
                    client.login(s.username, s.password.reveal())
                refused = client.send_message(build_message(email))
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            raise NotifyError(f"{where} answered {exc.smtp_code}: {text.strip()[:200]}",
                              transient=400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            raise NotifyError(f"{where} refused every recipient ({', '.join(str(c) for c in sorted(codes))})",
                              transient=all(400 <= c < 500 for c in codes)) from None
        except ssl.SSLError as exc:
            raise NotifyError(f"{where}: TLS failed ({exc.reason or type(exc).__name__}); check "
                              "email.smtp.security and email.smtp.ca_file", transient=False) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise NotifyError(f"{where}: {exc}; check email.smtp.security", transient=False) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}", transient=True) from None
        if refused:
            raise NotifyError(f"{where} refused {', '.join(sorted(refused))}", transient=False)
