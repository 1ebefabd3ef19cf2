#!/usr/bin/perl

# Tests for ngx-mail-auth: the transport policy, through nginx's mail proxy with real clients
# (Python imaplib, poplib, smtplib; certificates made by openssl at test time):
#   mail_auth_require_tls: IMAP/POP3 cleartext logins without TLS refused with
#   [PRIVACYREQUIRED] / [AUTH] before any password check (right and wrong password answered
#   alike, nothing counted by the limiter), the same login after STARTTLS/STLS on the same
#   connection and over implicit TLS accepted;
#   mail_auth_listener (the server block's auth_http_header X-Mail-Auth-Listener marker): AUTH
#   refused on the MX listener (503 5.5.1) while mail without AUTH still relays, submission
#   requires TLS (538 5.7.11), a listener with require_tls=off, mail_auth_listener_required;
#   client_cert=required accounts: refused without a certificate nginx verified, with a
#   self-signed one, with another certificate than the pinned cert_fingerprint; accepted with
#   one signed by the CA of ssl_client_certificate; the same from SQLite columns.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail pop3 imap smtp http mail_ssl/);
workers_can_read($t);

plan(skip_all => 'openssl or sqlite3 not installed') unless have_tool('openssl') && have_tool('sqlite3');

my $d = $t->testdir();

my $ca = make_ca($t);
make_server_cert($t);
make_client_cert($t, 'carol');
make_client_cert($t, 'dave');
make_client_cert($t, 'dave', name => 'dave2');
make_client_cert($t, 'carol', rogue => 1);
my $fp = cert_fingerprint("$d/dave.crt");

my %pw = (alice => 'alice pw', bob => 'bob pw', carol => 'carol pw', dave => 'dave pw');
$t->write_file('users', <<"EOF");
alice:{PLAIN}$pw{alice}
bob:{PLAIN}$pw{bob}
carol:{PLAIN}$pw{carol}::::::client_cert=required
dave:{PLAIN}$pw{dave}::::::client_cert=required cert_fingerprint=$fp
EOF

# SQLite: the client_cert and cert_fingerprint columns, from a query of the operator's
system('sqlite3', "$d/users.db",
	"CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT, client_cert TEXT, cert_fp TEXT);"
	. "INSERT INTO users VALUES ('erin', '{PLAIN}erin pw', 'required', NULL);"
	. "INSERT INTO users VALUES ('frank', '{PLAIN}frank pw', 'required', '$fp');"
	. "INSERT INTO users VALUES ('gina', '{PLAIN}gina pw', NULL, NULL);") == 0
	or die "sqlite3 failed\n";
$pw{$_} = "$_ pw" for qw/ erin frank gina /;

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        mail_auth_passwd_file users;
        mail_auth_backend imap 127.0.0.1:8144;
        mail_auth_backend pop3 127.0.0.1:8111;
        mail_auth_backend smtp 127.0.0.1:8026;
        mail_auth_backend mx 127.0.0.1:8028;
        mail_auth_fail_wait 1s;

        location = /auth {
            mail_auth;
            mail_auth_relay_domains example.org;
            mail_auth_require_tls imap pop3;
            mail_auth_listener mx auth=off;
            mail_auth_listener submission require_tls=on;
            mail_auth_listener webmail require_tls=off;
            mail_auth_limit zone=transport_limit:64k user=2/m;
        }

        location = /auth-sqlite {
            mail_auth;
            mail_auth_sqlite users.db;
            mail_auth_sqlite_query "SELECT name, password, client_cert, cert_fp AS cert_fingerprint FROM users WHERE name = :user";
        }

        location = /auth-strict {
            mail_auth;
            mail_auth_listener imap-strict;
            mail_auth_listener_required on;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    ssl_certificate      server.crt;
    ssl_certificate_key  server.key;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
        imap_auth  login plain;
        starttls   on;
    }

    server {
        listen     127.0.0.1:8993 ssl;
        protocol   imap;
        # optional_no_ca: nginx lets an unverified certificate through to auth_http (with
        # Auth-SSL-Verify: FAILED:...), so the module's own refusal is what is tested
        ssl_client_certificate  ca.crt;
        ssl_verify_client       optional_no_ca;
    }

    server {
        listen     127.0.0.1:8994 ssl;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-sqlite;
        ssl_client_certificate  ca.crt;
        ssl_verify_client       optional_no_ca;
    }

    server {
        listen     127.0.0.1:8142;
        protocol   imap;
        auth_http_header X-Mail-Auth-Listener webmail;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
        pop3_auth  plain;
        starttls   on;
    }

    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  none plain login;
        starttls   on;
        auth_http_header X-Mail-Auth-Listener mx;
    }

    server {
        listen     127.0.0.1:8587;
        protocol   smtp;
        smtp_auth  plain login;
        starttls   on;
        auth_http_header X-Mail-Auth-Listener submission;
    }

    server {
        listen     127.0.0.1:8145;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-strict;
        auth_http_header X-Mail-Auth-Listener imap-strict;
    }

    server {
        listen     127.0.0.1:8146;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-strict;
    }

    server {
        listen     127.0.0.1:8147;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-strict;
        auth_http_header X-Mail-Auth-Listener imap-strcit;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/imap.log", %pw);
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/pop3.log", %pw);
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), "$d/submission.log", %pw);
$t->run_daemon(\&MailAuthBackend::smtp, port(8028), "$d/mx.log", %pw);
$t->run()->plan(54);
$t->waitforsocket('127.0.0.1:' . port($_)) for (8144, 8111, 8026, 8028);

# (named subs here use $d, never $t: a closure over $t would keep nginx running past the
# harness's end-of-test checks)
sub client {
	my ($proto, $port, $user, $pass, @opt) = @_;
	return MailAuthTest::python_client('transport_client.py', $proto, port($port), $user, $pass, @opt);
}

sub tls {
	my ($mode, $cert) = @_;
	my @o = ('--tls', $mode, '--ca', "$d/ca.crt");
	push @o, '--cert', "$d/$cert.crt", '--key', "$d/$cert.key" if $cert;
	return @o;
}

sub lines {
	my ($file) = @_;
	open my $fh, '<', $file or return ();
	return <$fh>;
}

sub count {
	my ($re) = @_;
	return scalar grep { $_ =~ $re } lines("$d/error.log");
}

sub decision {
	my ($re) = @_;
	return wait_for(3, sub { count(qr/mail_auth: .*$re/) });
}

my $privacy = '[PRIVACYREQUIRED] Encryption required for requested authentication mechanism';
my $invalid = '[AUTHENTICATIONFAILED] Invalid login or password';

###############################################################################

# IMAP without TLS: refused with [PRIVACYREQUIRED], whatever the password

# (wrong passwords first: alice has never logged in from here, so the limiter would count
# them against her if anything did)
my ($rc, $out) = client('imap', 8143, 'alice', 'wrong 1');
is($out, "FAIL $privacy\n", 'imap LOGIN without TLS: [PRIVACYREQUIRED]');
ok(decision(qr/user="alice" .* method=plain .* result=tls-required reason="plain login without TLS \(mail_auth_require_tls imap\); password not checked"/),
	'imap without TLS: logged as tls-required');
($rc, $out) = client('imap', 8143, 'nobody', 'wrong');
is($out, "FAIL $privacy\n", 'imap without TLS, unknown user: the same answer');
($rc, $out) = client('imap', 8143, 'alice', 'wrong 2', '--mech', 'plain');
is($out, "FAIL $privacy\n", 'imap AUTHENTICATE PLAIN without TLS: refused too');
($rc, $out) = client('imap', 8143, 'alice', 'wrong 3');
is($rc, 1, 'imap without TLS: a third wrong password, refused');
($rc, $out) = client('imap', 8143, 'alice', $pw{alice});
is($out, "FAIL $privacy\n", 'imap without TLS, the right password: the same answer');
is(scalar(my @l = lines("$d/imap.log")), 0, 'no refused login reached the backend');

# the session goes on: STARTTLS on the same connection, then the login is accepted

($rc, $out) = client('imap', 8143, 'alice', $pw{alice}, tls('starttls'), '--starttls-retry');
like($out, qr/\AFAIL \Q$privacy\E\nOK OK /, 'imap: refused in cleartext, then STARTTLS and OK on the same connection');

# none of the cleartext attempts counted: 3 wrong passwords for alice under user=2/m, and she
# is still let in (each would have been a failure against her budget, the second a ban)

($rc, $out) = client('imap', 8993, 'alice', $pw{alice}, tls('implicit'));
is($rc, 0, 'imap over implicit TLS: OK after the refused cleartext attempts') or diag($out);
($rc, $out) = client('imap', 8143, 'alice', $pw{alice}, tls('starttls'));
is($rc, 0, 'imap after STARTTLS: OK') or diag($out);
is(count(qr/result=rate-limited/), 0, 'nothing rate-limited');
is(count(qr/user="alice" .*result=invalid/), 0, 'no cleartext attempt was checked as a password');

# a listener with require_tls=off (webmail on loopback): cleartext logins go on

($rc, $out) = client('imap', 8142, 'bob', $pw{bob});
is($rc, 0, 'webmail listener (require_tls=off): cleartext login OK') or diag($out);
($rc, $out) = client('imap', 8142, 'bob', 'wrong');
is($out, "FAIL $invalid\n", 'webmail listener: a wrong password is checked');

# POP3

($rc, $out) = client('pop3', 8110, 'bob', $pw{bob});
is($out, "FAIL -ERR [AUTH] Encryption required for requested authentication mechanism\n",
	'pop3 USER/PASS without TLS: -ERR [AUTH]');
($rc, $out) = client('pop3', 8110, 'bob', $pw{bob}, '--mech', 'plain');
is($rc, 1, 'pop3 AUTH PLAIN without TLS: refused') or diag($out);
($rc, $out) = client('pop3', 8110, 'bob', $pw{bob}, tls('starttls'), '--starttls-retry');
like($out, qr/\AFAIL -ERR \[AUTH\] .*\nOK /, 'pop3: refused, then STLS and OK on the same connection');
ok(decision(qr/user="bob" .* protocol=pop3 .* result=tls-required/), 'pop3: logged as tls-required');

# SMTP submission: not in mail_auth_require_tls, but its listener says require_tls=on

($rc, $out) = client('smtp', 8587, 'bob', $pw{bob});
is($out, "FAIL 538 5.7.11 Encryption required for requested authentication mechanism\n",
	'submission AUTH PLAIN without TLS: 538 5.7.11');
ok(decision(qr/user="bob" .* protocol=smtp .* result=tls-required reason="plain login without TLS \(listener submission require_tls=on\)/),
	'submission: logged with the listener');
($rc, $out) = client('smtp', 8587, 'bob', $pw{bob}, '--mech', 'login');
is($out, "FAIL 538 5.7.11 Encryption required for requested authentication mechanism\n",
	'submission AUTH LOGIN without TLS: 538 5.7.11');
($rc, $out) = client('smtp', 8587, 'bob', $pw{bob}, tls('starttls'));
like($out, qr/^OK 235 /, 'submission after STARTTLS: 235') or diag($out);
ok(wait_for(3, sub { open my $fh, '<', "$d/submission.log" or return 0; local $/; <$fh> =~ /xclient user=bob/ }),
	'submission: the backend got the session');

# SMTP on the MX listener: no AUTH at all (TLS or not), mail without AUTH still relayed

($rc, $out) = client('smtp', 8025, 'bob', $pw{bob});
is($out, "FAIL 503 5.5.1 Authentication not enabled on this port\n", 'mx: AUTH refused, 503 5.5.1');
($rc, $out) = client('smtp', 8025, 'bob', $pw{bob}, tls('starttls'));
is($out, "FAIL 503 5.5.1 Authentication not enabled on this port\n", 'mx: AUTH after STARTTLS refused too');
($rc, $out) = client('smtp', 8025, 'bob', 'wrong', tls('starttls'), '--mech', 'login');
is($out, "FAIL 503 5.5.1 Authentication not enabled on this port\n", 'mx: AUTH LOGIN refused alike');
ok(decision(qr/user="bob" .* protocol=smtp .* result=listener-denied reason="no logins on listener mx \(auth=off\)"/),
	'mx: logged as listener-denied');
($rc, $out) = sasl_client('smtp-send', '127.0.0.1', port(8025), 'sender@remote.test', 'bob@example.org');
is($rc, 0, 'mx: mail without AUTH for an accepted domain is relayed') or diag($out);
ok(wait_for(3, sub { open my $fh, '<', "$d/mx.log" or return 0; local $/; <$fh> =~ /smtp data .*bob\@example\.org/ }),
	'mx: the MX backend got the message');
ok(!grep({ /smtp (ok|fail|xclient user=bob)/ } lines("$d/mx.log")), 'mx: no login reached the MX backend');

# mail_auth_listener_required on: a login from an undeclared listener is a temporary failure

($rc, $out) = client('imap', 8145, 'bob', $pw{bob});
is($rc, 0, 'strict location, declared listener: OK') or diag($out);
($rc, $out) = client('imap', 8146, 'bob', $pw{bob});
is($out, "FAIL [UNAVAILABLE] Temporary server problem, try again later\n", 'strict location, no marker: temporary failure');
ok(wait_for(3, sub { count(qr/\[error\].* mail_auth: user="bob" .* result=listener-unknown reason="no X-Mail-Auth-Listener header/) }),
	'no marker: logged at error');
($rc, $out) = client('imap', 8147, 'bob', $pw{bob});
is($out, "FAIL [UNAVAILABLE] Temporary server problem, try again later\n", 'strict location, a misspelt marker: temporary failure');
ok(wait_for(3, sub { count(qr/\[error\].* mail_auth: .*result=listener-unknown reason="listener imap-strcit is not declared/) }),
	'misspelt marker: logged at error');
# SMTP without AUTH is no login: it goes to the relay policy (here nothing relayed), marker or not
my $relay = http("GET /auth-strict HTTP/1.0\r\nHost: localhost\r\nAuth-Method: none\r\n"
	. "Auth-User: \r\nAuth-Pass: \r\nAuth-Protocol: smtp\r\nAuth-Login-Attempt: 1\r\n"
	. "Client-IP: 127.0.0.1\r\nAuth-SMTP-From: MAIL FROM:<a\@example.net>\r\n"
	. "Auth-SMTP-To: RCPT TO:<b\@example.org>\r\n\r\n") // '';
like($relay, qr/^Auth-Status: Relay access denied\r$/m,
	'strict location, SMTP without AUTH and no marker: the relay policy answers, not a temporary failure')
	or diag($relay);

# client_cert=required: a certificate nginx verified, and the pinned one if there is one

($rc, $out) = client('imap', 8993, 'carol', $pw{carol}, tls('implicit'));
is($out, "FAIL $invalid\n", 'client_cert=required, no certificate: refused');
ok(decision(qr/user="carol" .* result=cert-denied reason="account requires a verified client certificate \(Auth-SSL-Verify: NONE\)"/),
	'no certificate: logged as cert-denied');
($rc, $out) = client('imap', 8993, 'carol', $pw{carol}, tls('implicit', 'rogue-carol'));
is($out, "FAIL $invalid\n", 'client_cert=required, a self-signed certificate: refused');
ok(decision(qr/user="carol" .* result=cert-denied reason=".*Auth-SSL-Verify: FAILED:/),
	'self-signed: logged with nginx\'s verdict');
($rc, $out) = client('imap', 8143, 'carol', $pw{carol}, tls('starttls', 'carol'));
is($out, "FAIL $invalid\n", 'client_cert=required on a listener without ssl_verify_client: refused');
($rc, $out) = client('imap', 8993, 'carol', $pw{carol}, tls('implicit', 'carol'));
is($rc, 0, 'client_cert=required, a certificate signed by the CA: OK') or diag($out);
($rc, $out) = client('imap', 8993, 'carol', 'wrong', tls('implicit', 'carol'));
is($out, "FAIL $invalid\n", 'client_cert=required, the CA\'s certificate, wrong password: refused');
($rc, $out) = client('imap', 8993, 'alice', $pw{alice}, tls('implicit'));
is($rc, 0, 'an account without client_cert needs no certificate') or diag($out);

($rc, $out) = client('imap', 8993, 'dave', $pw{dave}, tls('implicit', 'dave2'));
is($out, "FAIL $invalid\n", 'pinned cert_fingerprint: another certificate of the CA refused');
ok(decision(qr/user="dave" .* result=cert-denied reason="client certificate is not the account's cert_fingerprint"/),
	'pinned: logged');
($rc, $out) = client('imap', 8993, 'dave', $pw{dave}, tls('implicit', 'dave'));
is($rc, 0, 'pinned cert_fingerprint: that certificate OK') or diag($out);
($rc, $out) = client('imap', 8993, 'dave', $pw{dave}, tls('implicit', 'carol'));
is($rc, 1, 'pinned cert_fingerprint: carol\'s certificate refused for dave') or diag($out);

# the same from SQLite columns

($rc, $out) = client('imap', 8994, 'erin', $pw{erin}, tls('implicit'));
is($out, "FAIL $invalid\n", 'sqlite client_cert=required, no certificate: refused');
ok(decision(qr/user="erin" .* result=cert-denied reason="account requires a verified client certificate/),
	'sqlite: logged as cert-denied');
($rc, $out) = client('imap', 8994, 'erin', $pw{erin}, tls('implicit', 'carol'));
is($rc, 0, 'sqlite client_cert=required, a certificate of the CA: OK') or diag($out);
($rc, $out) = client('imap', 8994, 'frank', $pw{frank}, tls('implicit', 'dave2'));
is($out, "FAIL $invalid\n", 'sqlite cert_fingerprint column: another certificate refused');
($rc, $out) = client('imap', 8994, 'frank', $pw{frank}, tls('implicit', 'dave'));
is($rc, 0, 'sqlite cert_fingerprint column: that certificate OK') or diag($out);
($rc, $out) = client('imap', 8994, 'gina', $pw{gina}, tls('implicit'));
is($rc, 0, 'sqlite client_cert NULL: no certificate needed') or diag($out);

###############################################################################
