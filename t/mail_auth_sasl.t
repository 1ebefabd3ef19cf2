#!/usr/bin/perl

# Tests for ngx-mail-auth: every SASL method nginx mail sends through auth_http, with real
# clients (poplib, imaplib, smtplib) through nginx's mail proxy:
#   APOP and CRAM-MD5 (checked against the stored password; the backend gets the password
#   back in Auth-Pass), CRAM-MD5 against Dovecot's {CRAM-MD5} form with a master user,
#   EXTERNAL with TLS client certificates from a test CA made by openssl, and SMTP without
#   AUTH (relay policy: accepted domains go to the MX backend, others get 550 5.7.1), with
#   XCLIENT to the backend. nginx 1.28's mail module sends no OAUTHBEARER/XOAUTH2.

###############################################################################

use warnings;
use strict;

use Test::More;
use MIME::Base64 qw/ encode_base64 /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::POP3;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail pop3 imap smtp http mail_ssl/);
workers_can_read($t);

plan(skip_all => 'openssl, htpasswd or doveadm not installed')
	unless have_tool('openssl') && have_tool('htpasswd') && have_tool('doveadm');

my $d = $t->testdir();

# A test CA, a server certificate for 127.0.0.1, client certificates signed by the CA (two
# with CN=dave, different keys), and a self-signed CN=alice one.
my $tls = MailAuthTLS->new($d);
$tls->ca();
$tls->server('server');
$tls->client('alice', '/O=Example/CN=alice');
$tls->client('dave', '/CN=dave');
$tls->client('dave2', '/CN=dave');
$tls->rogue('rogue', '/CN=alice');
# two CNs, mallory's first: nginx's RFC 2253 subject lists them in reverse (CN=alice,CN=mallory)
$tls->client('twocn', '/CN=mallory/CN=alice');
my $fp = $tls->fingerprint('dave');

my %pw = (alice => 'alice pw', bob => 'bob pw', carol => 'carol pw', dave => 'dave pw');
my $bcrypt = make_hash('htpasswd-B', $pw{bob});
my $cram = `doveadm -o stats_writer_socket_path= pw -s CRAM-MD5 -p '$pw{carol}'`;
$cram =~ s/\s+\z//;
# accounts without a password: an empty {PLAIN}, and doveadm's {CRAM-MD5} of the empty one
my $cram_empty = `doveadm -o stats_writer_socket_path= pw -s CRAM-MD5 -p ''`;
$cram_empty =~ s/\s+\z//;
$t->write_file('users', <<"EOF");
alice:{PLAIN}$pw{alice}
bob:$bcrypt
carol:$cram
erin:{PLAIN}
frank:$cram_empty
dave:{PLAIN}$pw{dave}::::::cert_fingerprint=$fp
EOF

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

        location = /auth {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_backend pop3 127.0.0.1:8111;
            mail_auth_backend smtp 127.0.0.1:8026;
            mail_auth_backend mx 127.0.0.1:8028;
            mail_auth_relay_domains example.org .lists.example.net;
            mail_auth_fail_wait 1s;
        }

        location = /auth-master {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_master_user master "master pw";
            mail_auth_fail_wait 1s;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
        pop3_auth  plain apop cram-md5;
    }

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
        imap_auth  plain cram-md5;
    }

    server {
        listen     127.0.0.1:8145;
        protocol   imap;
        imap_auth  cram-md5;
        auth_http  127.0.0.1:8080/auth-master;
    }

    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  none plain cram-md5;
        xclient    on;
    }

    server {
        listen     127.0.0.1:8993 ssl;
        protocol   imap;
        imap_auth  external;

        ssl_certificate         server.crt;
        ssl_certificate_key     server.key;
        ssl_client_certificate  ca.crt;
        # optional_no_ca: nginx lets an unverified certificate through to auth_http (with
        # Auth-SSL-Verify: FAILED:...), so the module's own refusal is what is tested
        ssl_verify_client       optional_no_ca;
    }
}

EOF

my %backend = (alice => $pw{alice}, dave => $pw{dave}, 'carol*master' => 'master pw',
	'erin*master' => 'master pw', 'frank*master' => 'master pw');
$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/imap.log", %backend);
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/pop3.log", %backend);
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), "$d/submission.log", %backend);
$t->run_daemon(\&MailAuthBackend::smtp, port(8028), "$d/mx.log", %backend);
$t->run()->plan(52);
$t->waitforsocket('127.0.0.1:' . port($_)) for (8144, 8111, 8026, 8028);

# (named subs here use $d, never $t: a closure over $t would keep nginx running past the
# harness's end-of-test checks)
sub logged {
	my ($file, $re) = @_;
	return wait_for(3, sub {
		open my $fh, '<', "$d/$file" or return 0;
		local $/;
		return <$fh> =~ $re;
	});
}

sub decision {
	my ($re) = @_;
	return logged('error.log', qr/mail_auth: .*$re/);
}

###############################################################################

# APOP (POP3): the digest of nginx's greeting timestamp, checked against {PLAIN}

my ($rc, $out) = sasl_client('pop3-apop', '127.0.0.1', port(8110), 'alice', $pw{alice});
is($rc, 0, 'apop: right digest logs in') or diag($out);
ok(logged('pop3.log', qr/^pop3 ok user=alice pass=alice pw$/m),
	'apop: the backend got the password from Auth-Pass');
($rc, $out) = sasl_client('pop3-apop', '127.0.0.1', port(8110), 'alice', 'wrong');
is($rc, 1, 'apop: wrong digest refused') or diag($out);
ok(decision(qr/user="alice" .* method=apop .* result=invalid reason="wrong apop response"/),
	'apop: logged as invalid');
($rc, $out) = sasl_client('pop3-apop', '127.0.0.1', port(8110), 'bob', $pw{bob});
is($rc, 1, 'apop: a bcrypt user can\'t use APOP') or diag($out);
ok(decision(qr/user="bob" .* method=apop .* result=method-denied reason="apop login refused: the stored password \(BLF-CRYPT\)/),
	'apop: the log says the stored scheme can\'t serve APOP');
($rc, $out) = sasl_client('pop3-apop', '127.0.0.1', port(8110), 'nobody', 'x');
is($rc, 1, 'apop: unknown user refused') or diag($out);

# a replayed APOP digest (from another session's timestamp) fails

my $s = Test::Nginx::POP3->new();
my $greeting = $s->read();
my ($stamp) = $greeting =~ /(<[^>]+>)/;
ok($stamp, 'pop3 greeting has an APOP timestamp');
require Digest::MD5;
my $digest = Digest::MD5::md5_hex($stamp . $pw{alice});
$s->send("APOP alice $digest");
$s->ok('apop by hand: right digest');
$s = Test::Nginx::POP3->new();
$s->read();
$s->send("APOP alice $digest");
like($s->read(), qr/^-ERR /, 'apop: the same digest in a new session (replay) is refused');

# CRAM-MD5 with {PLAIN}: POP3, IMAP and SMTP

($rc, $out) = sasl_client('pop3-cram', '127.0.0.1', port(8110), 'alice', $pw{alice});
is($rc, 0, 'pop3 cram-md5 logs in') or diag($out);
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8143), 'alice', $pw{alice});
is($rc, 0, 'imap cram-md5 logs in') or diag($out);
ok(logged('imap.log', qr/^imap ok user=alice pass=alice pw$/m),
	'imap cram-md5: the backend got the password');
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8143), 'alice', 'wrong');
is($rc, 1, 'imap cram-md5: wrong password refused') or diag($out);
($rc, $out) = sasl_client('smtp-cram', '127.0.0.1', port(8025), 'alice', $pw{alice});
is($rc, 0, 'smtp cram-md5 logs in') or diag($out);
ok(logged('submission.log', qr/^smtp xclient user=alice /m),
	'smtp cram-md5: the submission backend got XCLIENT LOGIN=alice');
($rc, $out) = sasl_client('smtp-cram', '127.0.0.1', port(8025), 'alice', 'wrong');
like($out, qr/^FAIL 535 /, 'smtp cram-md5: wrong password gets 535') or diag($out);

# CRAM-MD5 with Dovecot's {CRAM-MD5}: verified, but no password for the backend unless a
# master user is configured

($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8143), 'carol', $pw{carol});
is($rc, 1, '{CRAM-MD5} without a master user: refused') or diag($out);
ok(decision(qr/user="carol" .* method=cram-md5 .* result=method-denied reason="cram-md5 login verified but there is no password for the backend/),
	'{CRAM-MD5}: the log says why');
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8145), 'carol', $pw{carol});
is($rc, 0, '{CRAM-MD5} with a master user logs in') or diag($out);
ok(logged('imap.log', qr/^imap ok user=carol\*master pass=master pw$/m),
	'master user: the backend login is carol*master with the master password');
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8145), 'carol', 'wrong');
is($rc, 1, '{CRAM-MD5} with a master user: wrong password refused') or diag($out);

# An account whose stored password is empty has none: a password login refuses an empty
# password, and the response to the empty key, which anyone can compute from the challenge,
# must not log in either (with the master user, it would open the account on the backend)

($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8145), 'erin', '');
is($rc, 1, 'master user: CRAM-MD5 with the empty key refused for an empty {PLAIN}') or diag($out);
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8145), 'frank', '');
is($rc, 1, 'master user: CRAM-MD5 with the empty key refused for the {CRAM-MD5} of ""') or diag($out);
($rc, $out) = sasl_client('pop3-apop', '127.0.0.1', port(8110), 'erin', '');
is($rc, 1, 'apop: the empty password\'s digest refused for an empty {PLAIN}') or diag($out);
ok(decision(qr/user="erin" .* method=apop .* result=invalid reason="apop login refused: the stored password is empty/),
	'apop: logged as a failed login (counted), saying the stored password is empty');
ok(decision(qr/user="frank" .* method=cram-md5 .* result=invalid reason="cram-md5 login refused: the stored password is empty/),
	'cram-md5: the same for the {CRAM-MD5} of ""');
ok(!logged('imap.log', qr/^imap ok user=(erin|frank)/m), 'no backend login for erin or frank');

# EXTERNAL: the client certificate names the account

($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/alice.crt", "$d/alice.key", '-');
is($rc, 0, 'external: CA-signed certificate CN=alice logs in') or diag($out);
ok(logged('imap.log', qr/^imap ok user=alice pass=alice pw$/m),
	'external: backend login as the certificate\'s CN');
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/alice.crt", "$d/alice.key", 'alice');
is($rc, 0, 'external: authorization identity = CN logs in') or diag($out);
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/alice.crt", "$d/alice.key", 'bob');
is($rc, 1, 'external: another authorization identity is refused') or diag($out);
ok(decision(qr/user="alice" .* method=external .* result=cert-denied reason="authorization identity \\x22bob\\x22 is not the certificate's CN"/),
	'external: logged as cert-denied');
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/rogue.crt", "$d/rogue.key", '-');
is($rc, 1, 'external: a self-signed CN=alice certificate is refused') or diag($out);
ok(decision(qr/method=external .* result=cert-denied reason="client certificate not verified \(Auth-SSL-Verify: FAILED:self-signed certificate\)"/),
	'external: unverified certificate logged');
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/twocn.crt", "$d/twocn.key", '-');
is($rc, 1, 'external: a certificate with two CNs (mallory, alice) names no one') or diag($out);
ok(decision(qr/method=external .* result=cert-denied reason="no CN, or several, in the client certificate's subject"/),
	'external: two CNs logged');
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt", '-', '-', 'alice');
is($rc, 1, 'external: no certificate is refused') or diag($out);
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/dave.crt", "$d/dave.key", '-');
is($rc, 0, 'external: pinned fingerprint, right certificate') or diag($out);
($rc, $out) = sasl_client('imaps-external', '127.0.0.1', port(8993), "$d/ca.crt",
	"$d/dave2.crt", "$d/dave2.key", '-');
is($rc, 1, 'external: pinned fingerprint, another CA-signed CN=dave refused') or diag($out);

# SMTP without AUTH: relay policy

($rc, $out) = sasl_client('smtp-send', '127.0.0.1', port(8025), 'a@elsewhere.example', 'bob@example.org');
is($rc, 0, 'smtp none: mail for an accepted domain is taken') or diag($out);
ok(logged('mx.log', qr/^smtp data from=FROM:<a\@elsewhere\.example>.* to=TO:<bob\@example\.org> lines=\d+$/m),
	'smtp none: the message reached the MX backend');
ok(logged('mx.log', qr/^smtp xclient user= xclient=ADDR=127\.0\.0\.1 /m),
	'smtp none: XCLIENT told the MX the client address');
($rc, $out) = sasl_client('smtp-send', '127.0.0.1', port(8025), 'a@elsewhere.example', 'x@list1.lists.example.net');
is($rc, 0, 'smtp none: a subdomain of .lists.example.net is taken') or diag($out);
($rc, $out) = sasl_client('smtp-send', '127.0.0.1', port(8025), 'a@elsewhere.example', 'victim@example.com');
like($out, qr/^FAIL 550 5\.7\.1 Relay access denied/, 'smtp none: other domains get 550 5.7.1')
	or diag($out);
ok(decision(qr/method=none .* result=relay-denied reason="relay to <victim\@example\.com> from <a\@elsewhere\.example> refused: domain not in mail_auth_relay_domains"/),
	'smtp none: relay refusal logged');

# authenticated submission goes to the submission backend, whatever the recipient

($rc, $out) = sasl_client('smtp-send', '127.0.0.1', port(8025), 'alice@example.org',
	'victim@example.com', 'alice', $pw{alice});
is($rc, 0, 'authenticated submission relays anywhere') or diag($out);
ok(logged('submission.log', qr/^smtp data from=FROM:<alice\@example\.org>.* to=TO:<victim\@example\.com>/m),
	'authenticated submission reached the submission backend');

# swaks, a real SMTP client: AUTH PLAIN through nginx, a relay refusal, a wrong password

SKIP: {
skip 'swaks not installed (scripts/setup installs it)', 4 unless have_tool('swaks');

my $swaks = "swaks --server 127.0.0.1 --port " . port(8025) . " --helo client.test "
	. "--from sender\@example.org --timeout 15";
$out = `$swaks --to someone\@example.com --auth PLAIN --auth-user alice --auth-password '$pw{alice}' 2>&1`;
like($out, qr/^<- +235 /m, 'swaks: AUTH PLAIN accepted') or diag($out);
ok(logged('submission.log', qr/^smtp data from=FROM:<sender\@example\.org>.* to=TO:<someone\@example\.com>/m),
	'swaks: the message reached the submission backend');
$out = `$swaks --to victim\@example.com 2>&1`;
like($out, qr/^<\*\* +550 5\.7\.1 Relay access denied/m, 'swaks without AUTH: relay refused')
	or diag($out);
$out = `$swaks --to someone\@example.com --auth PLAIN --auth-user alice --auth-password wrong 2>&1`;
like($out, qr/^<\*\* +535 5\.7\.8 /m, 'swaks: wrong password gets 535 5.7.8') or diag($out);
}

###############################################################################
