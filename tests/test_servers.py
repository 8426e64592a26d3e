"""The test servers themselves: Dovecot starts, restarts and serves IMAP; aiosmtpd records."""

from __future__ import annotations

import imaplib
import smtplib
from typing import Any

import pytest


@pytest.mark.dovecot
def test_dovecot_serves_imap_and_survives_a_restart(dovecot: Any) -> None:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
    imap.login("citizen1@mail.test", "secret-1")
    status, _ = imap.append("Sent", None, None, b"Subject: x\r\n\r\nhello\r\n")
    assert status == "OK"
    _, data = imap.list()
    assert any(b"\\Junk" in line for line in data)
    imap.logout()
    dovecot.restart()
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
    imap.login("citizen1@mail.test", "secret-1")
    _, count = imap.select("Sent")
    assert count == [b"1"]
    imap.logout()


def test_smtp_server_records_and_follows_its_script(smtp_server: Any) -> None:
    smtp_server.handler.refuse["gone@hbj.gz.gd.test"] = "550 5.1.1 user unknown"
    smtp_server.handler.data_script.append("451 4.3.0 try again later")
    with smtplib.SMTP("127.0.0.1", smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@mail.test", ["gone@hbj.gz.gd.test"], b"Subject: x\r\n\r\nx\r\n")
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail("a@mail.test", ["zixun@hbj.gz.gd.test"], b"Subject: x\r\n\r\nx\r\n")
        assert err.value.smtp_code == 451
        client.sendmail("a@mail.test", ["zixun@hbj.gz.gd.test"], b"Subject: y\r\n\r\ny\r\n")
    assert [m.rcpt_tos for m in smtp_server.messages] == [["zixun@hbj.gz.gd.test"]]
