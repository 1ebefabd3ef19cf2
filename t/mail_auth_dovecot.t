#!/usr/bin/perl

# Tests for ngx-mail-auth with a real backend: Debian's Dovecot (imapd, pop3d), started here on
# loopback with its own configuration. Users are in the module's store (hashes made by
# htpasswd, doveadm pw and openssl passwd); Dovecot reads the same file, so the password nginx
# passes on is checked again by Dovecot. A master-user account logs in to Dovecot as
# "bob*master". Clients: Python imaplib/poplib (plain, STARTTLS, IMAPS with a test CA) and
# curl imap:// / imaps://.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;
use MailAuthTLS;
use MailAuthDovecot;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 http mail_ssl/);
workers_can_read($t);

plan(skip_all => 'Dovecot imapd/pop3d not installed (apt-get install dovecot-imapd '
	. 'dovecot-pop3d; scripts/setup does)') unless MailAuthDovecot::available();
plan(skip_all => 'htpasswd, doveadm, openssl or curl not installed')
	unless have_tool('htpasswd') && have_tool('doveadm') && have_tool('openssl')
		&& have_tool('curl');

my $d = $t->testdir();

my %pw = (alice => 'alice pw', carol => 'carol-pw', dave => 'd"ave\\ %41', erin => 'erin pw',
	bob => 'bob pw');
my %kind = (alice => 'bcrypt by htpasswd', carol => 'SHA512-CRYPT by doveadm',
	dave => 'SHA-512 crypt by openssl, quote/backslash/% in the password');
my %hash = (
	alice => make_hash('htpasswd-B', $pw{alice}),
	carol => make_hash('doveadm-SHA512-CRYPT', $pw{carol}),
	dave => make_hash('openssl-6', $pw{dave}),
	bob => make_hash('htpasswd-B', $pw{bob}),
);
die "a hash tool failed\n" if grep { !defined } values %hash;

# The module's store; Dovecot's passdb is the same lines without bob (bob only reaches Dovecot
# through the master user, with the module's extra fields user= and pass=).
my $users = join '', map { "$_:$hash{$_}\n" } qw/ alice carol dave /;
$users .= "erin:{PLAIN}$pw{erin}\n";
$t->write_file('dovecot-users', $users);
$t->write_file('users', $users . "bob:$hash{bob}::::::user=bob*master pass=master-secret\n");
$t->write_file('masters', "master:{PLAIN}master-secret\n");

my $tls = MailAuthTLS->new($d);
$tls->ca();
$tls->server('server');

my $dovecot = MailAuthDovecot->new("$d/dovecot", imap => port(8144), pop3 => port(8111),
	passdb => "$d/dovecot-users", masters => "$d/masters");
for my $u (qw/ alice carol dave erin bob /) {
	$dovecot->deliver($u, "From: postmaster\@example.org\r\nTo: $u\@example.org\r\n"
		. "Subject: for $u\r\n\r\nHello $u, this message waits in your Maildir.\r\n");
}

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
            mail_auth_fail_wait 1s;
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
        starttls   on;
    }

    server {
        listen     127.0.0.1:8993 ssl;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
        pop3_auth  plain apop;
    }
}

EOF

$dovecot->start();
$t->run()->plan(26);
$t->waitforsocket('127.0.0.1:' . port(8144));
$t->waitforsocket('127.0.0.1:' . port(8111));

###############################################################################

my $imap = port(8143);
my $imaps = port(8993);
my $pop3 = port(8110);

# IMAP through nginx to Dovecot: LOGIN, SELECT INBOX, FETCH the Maildir message, LOGOUT

for my $u (qw/ alice carol dave /) {
	my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, $u, $pw{$u});
	is($rc, 0, "imaplib $u ($kind{$u}) through nginx to Dovecot")
		or diag($out);
	like($out, qr/Hello $u, this message waits/, "imaplib $u: fetched the message");
}
like($dovecot->log(), qr/imap-login: Info: Login: user=<alice>, method=PLAIN/,
	'Dovecot checked the password nginx passed on (its own log)');

# a wrong password is refused by the module and never reaches Dovecot

my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'alice', 'wrong');
is($rc, 1, 'wrong password refused') or diag($out);
like($t->read_file('error.log'), qr/mail_auth: user="alice" .* result=invalid/,
	'refusal logged by the module');
unlike($dovecot->log(), qr/auth failed|Disconnected \(auth failed/,
	'Dovecot never saw a failed login');

# master user: the client uses bob's own password, nginx logs in as bob*master

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'bob', $pw{bob});
is($rc, 0, 'master user: bob logs in') or diag($out);
like($out, qr/Hello bob,/, 'master user: bob sees his own INBOX');
like($dovecot->log(), qr/Login: user=<bob>, method=PLAIN/,
	'Dovecot: master login for bob');

# TLS on the client side: STARTTLS and IMAPS, the server certificate checked against the CA

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'alice', $pw{alice},
	'starttls', "$d/ca.crt");
is($rc, 0, 'STARTTLS login') or diag($out);
like($out, qr/Hello alice,/, 'STARTTLS: fetched');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imaps, 'carol', $pw{carol},
	'imaps', "$d/ca.crt");
is($rc, 0, 'IMAPS login') or diag($out);
like($t->read_file('error.log'), qr/mail_auth: user="carol" .* protocol=imap method=plain .* result=ok/,
	'IMAPS login decided by the module');

# curl

my $body = `curl -sS --max-time 15 -u 'alice:$pw{alice}' 'imap://127.0.0.1:$imap/INBOX;UID=1' 2>&1`;
like($body, qr/Hello alice, this message waits/, 'curl imap:// fetch');
$body = `curl -sS --max-time 15 --cacert '$d/ca.crt' -u 'carol:$pw{carol}' 'imaps://127.0.0.1:$imaps/INBOX;UID=1' 2>&1`;
like($body, qr/Hello carol, this message waits/, 'curl imaps:// fetch');
$body = `curl -sS --max-time 15 -u 'alice:wrong' 'imap://127.0.0.1:$imap/INBOX;UID=1' 2>&1`;
like($body, qr/Login denied|denied/i, 'curl: wrong password denied');

# POP3 through nginx to Dovecot: USER/PASS, STAT, RETR, QUIT; APOP with a {PLAIN} user

($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'carol', $pw{carol});
is($rc, 0, 'poplib USER/PASS to Dovecot') or diag($out);
like($out, qr/Hello carol,/, 'poplib RETR');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'erin', $pw{erin}, 'apop');
is($rc, 0, 'poplib APOP: nginx hands Dovecot the stored password') or diag($out);
like($out, qr/Hello erin,/, 'APOP: RETR');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'alice', $pw{alice}, 'apop');
is($rc, 1, 'APOP for a bcrypt user refused') or diag($out);

$t->stop();
$dovecot->stop();
ok(!-e "$d/dovecot/run/master.pid", 'Dovecot stopped');

###############################################################################
