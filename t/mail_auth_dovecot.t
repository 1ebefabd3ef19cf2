#!/usr/bin/perl

# Tests for ngx-mail-auth with a real backend: Debian's Dovecot (imapd, pop3d), started here on
# loopback with its own configuration (t/lib/MailAuthDovecot.pm). The module's passwd-file is
# also Dovecot's passdb: the password nginx passes on is checked again by Dovecot. Hashes are
# made by real tools (htpasswd -B, doveadm pw, openssl passwd). One account logs in to Dovecot
# through a master user ("bob*master", from the extra fields user= and pass= of its line).
# Dovecot's own extra fields that refuse a login (fail, noauthenticate, nologin whatever its
# value, allow_real_nets) are refused by the module as by Dovecot itself (the module let them
# in before: it ignored the first three and read nologin=no as "no").
# Clients: Python imaplib/poplib (plain, STARTTLS and IMAPS checked against a test CA made by
# openssl, t/lib/MailAuthTLS.pm), curl imap:// imaps:// pop3://, and swaks through nginx's
# SMTP proxy (to the fake SMTP backend: Dovecot's submission service is not used).

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;
use MailAuthDovecot;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 smtp http mail_ssl/);
workers_can_read($t);

plan(skip_all => 'Dovecot (dovecot-core, dovecot-imapd, dovecot-pop3d) not installed; '
	. 'scripts/setup installs them') unless MailAuthDovecot::available();
plan(skip_all => 'doveadm, htpasswd, openssl, curl or python3 not installed; scripts/setup '
	. 'installs them') unless have_tool('doveadm') && have_tool('htpasswd')
		&& have_tool('openssl') && have_tool('curl') && have_tool('python3');

my $d = $t->testdir();

# The store: nginx's module and Dovecot's passdb read this same file.
#   alice  bcrypt from htpasswd -B, no prefix ($2y$: Dovecot's default scheme CRYPT, i.e.
#          libxcrypt, verifies it)
#   frank  the same kind of hash with Dovecot's {BLF-CRYPT} prefix
#   carol  doveadm pw -s SHA512-CRYPT ({SHA512-CRYPT}$6$...)
#   dave   openssl passwd -6 ($6$...), a password with a quote, a backslash and "%41"
#   erin   {PLAIN} (APOP needs a password the module can give Dovecot)
#   bob    bcrypt; extra fields user=bob*master pass=<master's password>: nginx logs in to
#          Dovecot as the master user on bob's behalf (Dovecot's master passdb)
my %pw = (alice => 'alice pw', frank => 'frank pw', carol => 'carol-pw',
	dave => 'd"ave\\ %41', erin => 'erin pw', bob => 'bob pw', master => 'master-secret');
my %kind = (
	alice => 'bcrypt $2y$ by htpasswd -B',
	frank => '{BLF-CRYPT} + htpasswd -B',
	carol => '{SHA512-CRYPT} by doveadm pw',
	dave => '$6$ by openssl passwd -6, quote/backslash/% in the password',
	erin => '{PLAIN}',
);
my %hash = (
	alice => make_hash('htpasswd-B', $pw{alice}),
	frank => make_hash('htpasswd-B', $pw{frank}),
	carol => make_hash('doveadm-SHA512-CRYPT', $pw{carol}),
	dave => make_hash('openssl-6', $pw{dave}),
	bob => make_hash('htpasswd-B', $pw{bob}),
	master => make_hash('doveadm-SHA512-CRYPT', $pw{master}),
);
die "a hash tool failed\n" if grep { !defined } values %hash;
$hash{frank} = "{BLF-CRYPT}$hash{frank}";
$hash{erin} = "{PLAIN}$pw{erin}";

# Dovecot's extra fields that refuse the login, each on an account with a right {PLAIN}
# password; `near` may log in from 127.0.0.1 only (allow_real_nets), `far` from elsewhere only
# (a restriction given twice: Dovecot checks each, the module refuses the line, where the last
# one won: twonets logged in from 127.0.0.1, twodelay at once)
my %refusing = (failed => 'fail', noauth => 'noauthenticate', nologno => 'nologin=no',
	far => 'allow_real_nets=192.0.2.0/24',
	twonets => 'allow_nets=192.0.2.0/24 allow_nets=127.0.0.0/8',
	twodelay => 'delay_until=' . (time() + 3600) . ' delay_until=0');
$t->write_file('users', join('', map { "$_:$hash{$_}\n" } qw/ alice frank carol dave erin /)
	. "bob:$hash{bob}::::::user=bob*master pass=$pw{master}\n"
	. join('', map { "$_:{PLAIN}$_ pw::::::$refusing{$_}\n" } sort keys %refusing)
	. "near:{PLAIN}near pw::::::allow_real_nets=127.0.0.0/8\n"
	. "localnet:{PLAIN}localnet pw::::::allow_nets=local,127.0.0.0/8\n");
$t->write_file('masters', "master:$hash{master}\n");

my ($ca) = make_ca($t);
make_server_cert($t);                                      # server.crt, server.key
my ($rogue) = make_client_cert($t, 'mallory', rogue => 1); # not our CA: a wrong trust anchor

my $dovecot = MailAuthDovecot->new("$d/dovecot", imap => port(8144), pop3 => port(8111),
	passdb => "$d/users", masters => "$d/masters");
for my $u (qw/ alice frank carol dave erin bob near localnet /, keys %refusing) {
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
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_backend smtp 127.0.0.1:%%PORT_8026%%;
            mail_auth_fail_wait 1s;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    ssl_certificate      server.crt;
    ssl_certificate_key  server.key;

    server {
        listen     127.0.0.1:%%PORT_8143%%;
        protocol   imap;
        starttls   on;
    }

    server {
        listen     127.0.0.1:%%PORT_8993%% ssl;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:%%PORT_8110%%;
        protocol   pop3;
        pop3_auth  plain apop;
    }

    server {
        listen     127.0.0.1:%%PORT_8025%%;
        protocol   smtp;
        smtp_auth  login plain;
    }
}

EOF

$dovecot->start();    # returns when both listeners answer
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), "$d/smtp.log");
$t->run()->plan(82);
$t->waitforsocket('127.0.0.1:' . port(8026)) or die "fake SMTP backend is not listening\n";

###############################################################################

my ($imap, $imaps, $pop3, $smtp) = (port(8143), port(8993), port(8110), port(8025));
my $dimap = port(8144);

# Dovecot writes its log through its own log process: give a line a moment to arrive
sub dovecot_logged {
	my ($dovecot, $re) = @_;
	return wait_for(5, sub { $dovecot->log() =~ $re });
}

sub decision {
	my ($user, $proto, $result) = @_;
	my $re = qq/mail_auth: user="\Q$user\E" client=127\\.0\\.0\\.1 protocol=$proto /
		. qq/method=\\w+ attempt=\\d+ result=$result /;
	return qr/$re/;
}

# IMAP through nginx to Dovecot: LOGIN, SELECT INBOX, FETCH the Maildir message, LOGOUT

for my $u (qw/ alice frank carol dave /) {
	my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, $u, $pw{$u});
	is($rc, 0, "imaplib $u ($kind{$u}): LOGIN through nginx to Dovecot") or diag($out);
	like($out, qr/^OK 1 message\(s\)\n.*^Subject: for $u\r?\n.*Hello $u, this message waits/ms,
		"imaplib $u: SELECT INBOX has 1 message, FETCH got its text");
	ok(dovecot_logged($dovecot,
			qr/imap-login: Info: Login: user=<$u>, method=PLAIN, rip=127\.0\.0\.1/),
		"Dovecot itself verified $u\'s password as nginx passed it on");
}
like($t->read_file('error.log'), decision('alice', 'imap', 'ok'),
	'the module logged its decision');

# The same file is Dovecot's passdb: bcrypt with and without {BLF-CRYPT}, straight to Dovecot

for my $u (qw/ alice frank /) {
	my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, $u, $pw{$u});
	is($rc, 0, "Dovecot alone accepts $u ($kind{$u}) from the module's file") or diag($out);
}

# a wrong password and an unknown user are refused by the module; Dovecot never sees them

my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'alice', 'wrong');
is($rc, 1, 'IMAP: wrong password refused') or diag($out);
like($out, qr/^FAIL .*Invalid login or password/m,
	'IMAP: the client got NO with the module\'s Auth-Status');
like($t->read_file('error.log'),
	qr/${\ decision('alice', 'imap', 'invalid')}reason="wrong password"/,
	'IMAP: the module logged the refusal');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'mallory', 'x');
is($rc, 1, 'IMAP: unknown user refused') or diag($out);
like($t->read_file('error.log'), decision('mallory', 'imap', 'unknown-user'),
	'IMAP: unknown user logged');

# master user: the client gives bob's own password; nginx logs in to Dovecot as bob*master
# with the master password from the account's extra fields

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'bob', $pw{bob});
is($rc, 0, 'master user: bob logs in with his own password') or diag($out);
like($out, qr/^OK 1 message\(s\)\n.*Hello bob, this message waits/ms,
	'master user: bob sees his own INBOX');
like($t->read_file('error.log'),
	qr/${\ decision('bob', 'imap', 'ok')}reason="backend 127\.0\.0\.1:$dimap as \\x22bob\*master\\x22"/,
	'master user: the module accepted bob, to log in as bob*master');
my $master_login = 'imap-login: Info: Login: user=<bob>, method=PLAIN, rip=127.0.0.1';
ok(dovecot_logged($dovecot,
		qr/auth: Info: Master user logging in as bob\n(?s:.*?)\Q$master_login\E/),
	'master user: Dovecot logged the master user in as bob');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'bob', $pw{master});
is($rc, 1, 'master user: the master password is no password for bob at nginx') or diag($out);
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'bob*master', $pw{master});
is($rc, 1, 'master user: "bob*master" is no account at nginx') or diag($out);

# TLS on the client side: STARTTLS and IMAPS, the server certificate checked against the CA

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'alice', $pw{alice},
	'starttls', $ca);
is($rc, 0, 'STARTTLS, certificate verified against the test CA: login') or diag($out);
like($out, qr/Hello alice,/, 'STARTTLS: fetched');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imaps, 'carol', $pw{carol}, 'imaps', $ca);
is($rc, 0, 'IMAPS, certificate verified against the test CA: login') or diag($out);
like($out, qr/Hello carol,/, 'IMAPS: fetched');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imaps, 'carol', $pw{carol}, 'imaps',
	$rogue);
is($rc, 2, 'IMAPS: the client refuses the server when it trusts another CA') or diag($out);
like($out, qr/CERTIFICATE_VERIFY_FAILED/, 'IMAPS: the refusal is a certificate error');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imaps, 'frank', 'wrong', 'imaps', $ca);
is($rc, 1, 'IMAPS: wrong password refused') or diag($out);

# curl

($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '-u', "alice:$pw{alice}",
	"imap://127.0.0.1:$imap/INBOX;UID=1");
like($out, qr/Hello alice, this message waits/, 'curl imap:// fetched UID 1') or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '-u', "dave:$pw{dave}",
	"imap://127.0.0.1:$imap/INBOX;UID=1");
like($out, qr/Hello dave, this message waits/, 'curl imap://, a password with " \\ %41')
	or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--cacert', $ca, '-u',
	"carol:$pw{carol}", "imaps://127.0.0.1:$imaps/INBOX;UID=1");
like($out, qr/Hello carol, this message waits/, 'curl imaps:// --cacert: fetched')
	or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--ssl-reqd', '--cacert', $ca,
	'-u', "frank:$pw{frank}", "imap://127.0.0.1:$imap/INBOX;UID=1");
like($out, qr/Hello frank, this message waits/, 'curl imap:// --ssl-reqd (STARTTLS): fetched')
	or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--cacert', $rogue, '-u',
	"carol:$pw{carol}", "imaps://127.0.0.1:$imaps/INBOX;UID=1");
is($rc, 60, 'curl imaps:// with another CA: certificate refused (exit 60)') or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '-u', 'alice:wrong',
	"imap://127.0.0.1:$imap/INBOX;UID=1");
is($rc, 67, 'curl imap://: wrong password, login denied (exit 67)') or diag($out);

# POP3 through nginx to Dovecot: USER/PASS, STAT, RETR, QUIT; APOP with a {PLAIN} user

for my $u (qw/ carol alice /) {
	($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, $u, $pw{$u});
	is($rc, 0, "poplib $u ($kind{$u}): USER/PASS through nginx to Dovecot") or diag($out);
	like($out, qr/^OK 1 message\(s\)\n.*Hello $u, this message waits/ms,
		"poplib $u: STAT 1 message, RETR got its text");
}
ok(dovecot_logged($dovecot, qr/pop3-login: Info: Login: user=<carol>, method=PLAIN/),
	'POP3: Dovecot verified carol\'s password');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'erin', $pw{erin}, 'apop');
is($rc, 0, 'poplib APOP: nginx hands Dovecot the stored password') or diag($out);
like($out, qr/Hello erin,/, 'APOP: RETR');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'alice', $pw{alice}, 'apop');
is($rc, 1, 'APOP for a bcrypt user refused') or diag($out);
like($t->read_file('error.log'), decision('alice', 'pop3', 'method-denied'),
	'APOP: refusal logged');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'carol', 'wrong');
is($rc, 1, 'POP3: wrong password refused') or diag($out);
like($t->read_file('error.log'),
	qr/${\ decision('carol', 'pop3', 'invalid')}reason="wrong password"/,
	'POP3: the module logged the refusal');
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '-u', "bob:$pw{bob}",
	"pop3://127.0.0.1:$pop3/1");
like($out, qr/Hello bob, this message waits/, 'curl pop3:// RETR 1, master user') or diag($out);

# nothing refused by the module got to Dovecot (no failed or abandoned login in its log)

my $dlog = $dovecot->log();
unlike($dlog, qr/auth failed|Password mismatch|unknown user|no auth attempts/i,
	'Dovecot saw no failed login') or diag($dlog);
unlike($dlog, qr/user=<(?:mallory|bob\*master)>/, 'Dovecot never saw the refused names');

# ... while it does log one when a client reaches it directly (so the check above can fail)

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', 'wrong');
is($rc, 1, 'Dovecot alone: wrong password refused') or diag($out);
ok(dovecot_logged($dovecot, qr/passwd-file\(alice,127\.0\.0\.1.*Password mismatch/),
	'Dovecot alone: the failed login is in its log');

# Dovecot's refusing extra fields: refused by Dovecot alone and by the module alike

for my $u (sort keys %refusing) {
	my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, $u, "$u pw");
	# (refused, or not answered in time: nologin without a reason)
	isnt($rc, 0, "Dovecot alone does not log $u ($refusing{$u}) in with the right password") or diag($out);
	($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, $u, "$u pw");
	# (its decision: Dovecot behind nginx would refuse an OK again, or not: noauthenticate)
	like($t->read_file('error.log'), decision($u, 'imap',
		$u eq 'far' ? 'network-denied' : $u =~ /^two/ ? 'store-error' : 'disabled'),
		"the module refuses $u ($refusing{$u}) too");
}
for my $via ([ 'Dovecot alone', $dimap ], [ 'the module', $imap ]) {
	my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $via->[1], 'near', 'near pw');
	is($rc, 0, "$via->[0]: near (allow_real_nets=127.0.0.0/8) logs in from 127.0.0.1") or diag($out);
	# Dovecot's keyword for a connection without an address (never one through nginx): the line
	# was malformed for the module, its user a temporary failure
	($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $via->[1], 'localnet', 'localnet pw');
	is($rc, 0, "$via->[0]: localnet (allow_nets=local,127.0.0.0/8) logs in from 127.0.0.1") or diag($out);
}

# SMTP through nginx with swaks: AUTH PLAIN and LOGIN checked by the module, then XCLIENT
# and the message to the (fake) submission backend

SKIP: {
skip 'swaks not installed (scripts/setup installs it)', 9 unless have_tool('swaks');

my @swaks = ('swaks', '--server', '127.0.0.1', '--port', $smtp, '--helo', 'client.test',
	'--from', 'sender@example.org', '--to', 'someone@example.com', '--timeout', '15');
($rc, $out) = run_tool(@swaks, '--auth', 'PLAIN', '--auth-user', 'carol',
	'--auth-password', $pw{carol});
is($rc, 0, 'swaks AUTH PLAIN: message sent') or diag($out);
like($out, qr/^<- +235 /m, 'swaks AUTH PLAIN: 235');
like($out, qr/^<- +250 2\.0\.0 queued/m, 'swaks: the backend queued the message');
ok(wait_for(5, sub { $t->read_file('smtp.log') =~ /^smtp xclient user=carol /m }),
	'the backend got XCLIENT LOGIN=carol from nginx');
like($t->read_file('error.log'), decision('carol', 'smtp', 'ok'),
	'SMTP: the module accepted carol');
($rc, $out) = run_tool(@swaks, '--auth', 'LOGIN', '--auth-user', 'dave',
	'--auth-password', $pw{dave});
like($out, qr/^<- +235 /m, 'swaks AUTH LOGIN (password with " \\ %41): 235') or diag($out);
($rc, $out) = run_tool(@swaks, '--auth', 'PLAIN', '--auth-user', 'alice',
	'--auth-password', 'wrong');
like($out, qr/^<\*\* +535 5\.7\.8 /m, 'swaks: wrong password gets 535 5.7.8') or diag($out);
like($t->read_file('error.log'),
	qr/${\ decision('alice', 'smtp', 'invalid')}reason="wrong password"/,
	'SMTP: the module logged the refusal');
unlike($t->read_file('smtp.log'), qr/user=alice/,
	'SMTP: the refused login never reached the backend');
}

###############################################################################

# everything this test started stops: nginx (and the fake backend) and Dovecot

$t->stop();
my $pid = $dovecot->pid();
$dovecot->stop();
ok(!kill(0, $pid), 'Dovecot master process gone');
ok(!IO::Socket::INET->new(PeerAddr => "127.0.0.1:$dimap", Proto => 'tcp'),
	'Dovecot no longer listens');

###############################################################################
