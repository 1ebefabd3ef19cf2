#!/usr/bin/env python3
"""SMTP AUTH EXTERNAL over implicit TLS with a client certificate, with Python's smtplib
(written for the tests).

usage: smtp_external.py HOST PORT CA CERT KEY [AUTHZ]
Connects with TLS (the server certificate checked against CA, CERT/KEY as the client
certificate), EHLO, "AUTH EXTERNAL <base64 AUTHZ or =>", then, if that succeeded, one message
(MAIL FROM:<dave@example.org>, RCPT TO:<someone@example.com>, DATA) and QUIT.
Prints one line: "OK <code> <reply>" or "FAIL <code> <reply>"; exit 0 on OK, 1 on a refusal,
2 on any other error. Loopback only.
"""
import base64
import smtplib
import ssl
import sys


def main():
    host, port, ca, cert, key = sys.argv[1:6]
    authz = sys.argv[6] if len(sys.argv) > 6 else ""
    if host not in ("127.0.0.1", "::1"):
        print("FAIL refusing non-loopback host")
        return 2
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    try:
        c = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=15)
        c.ehlo("client.test")
        arg = base64.b64encode(authz.encode()).decode() if authz else "="
        code, resp = c.docmd("AUTH", "EXTERNAL " + arg)
        if code != 235:
            print("FAIL", code, resp.decode(errors="replace"))
            return 1
        c.sendmail("dave@example.org", ["someone@example.com"],
                   "Subject: external\r\n\r\nsent after AUTH EXTERNAL\r\n")
        c.quit()
    except smtplib.SMTPResponseException as e:
        print("FAIL", e.smtp_code, e.smtp_error.decode(errors="replace"))
        return 1
    except Exception as e:  # TLS refused, connection closed ...
        print("FAIL", type(e).__name__, e)
        return 2
    print("OK", code, resp.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
