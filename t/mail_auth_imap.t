#!/usr/bin/perl

# Tests for ngx-mail-auth: IMAP logins through nginx's mail proxy, authenticated by the module
# from an htpasswd file made with the real tools, to a fake backend that checks what nginx
# passes on.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time /;
use MIME::Base64 qw/ encode_base64 /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap http/);
workers_can_read($t);

my %pw = (
	alice => 'alice-secret',
	bob => 'bob secret',
	carol => 'carol%20pw',
	dave => "d\x{e4}ve-p\x{e4}ss",
	erin => 'erin:colon',
);
utf8::encode($pw{dave});

my %hash = (
	alice => make_hash('htpasswd-B', $pw{alice}),
	bob => make_hash('htpasswd-m', $pw{bob}),
	carol => make_hash('htpasswd-s', $pw{carol}),
	dave => make_hash('openssl-6', $pw{dave}),
	erin => make_hash('doveadm-SSHA512', $pw{erin}) // make_hash('openssl-5', $pw{erin}),
);
plan(skip_all => 'htpasswd/openssl not installed') if grep { !defined } values %hash;

$t->write_file('users', join('', map { "$_:$hash{$_}\n" } sort keys %hash)
	. "# a comment line\n\n");

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
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 1s;
        }

        location = /auth-nowait {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 0;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
        imap_auth  login plain;
    }

    server {
        listen     127.0.0.1:8145;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-nowait;
    }
}

EOF

my $log = $t->testdir() . '/backend.log';
$t->run_daemon(\&MailAuthBackend::imap, port(8144), $log, %pw);
$t->run()->plan(19);
$t->waitforsocket('127.0.0.1:' . port(8144));

# (takes $t as an argument: a named sub closing over $t would delay its DESTROY checks)
sub backend_lines { my ($t) = @_; my @l = split /\n/, $t->read_file('backend.log'); scalar @l }

###############################################################################

# LOGIN with the right password (bcrypt from htpasswd -B): the backend gets the same credentials

my $s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a01 LOGIN alice alice-secret');
$s->ok('login bcrypt');
like($t->read_file('backend.log'), qr/^imap ok user=alice pass=alice-secret$/m,
	'backend got alice and her password');

# quoted strings with a space (apr1 from htpasswd -m)

$s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a01 LOGIN bob "bob secret"');
$s->ok('login apr1, password with space');

# AUTHENTICATE PLAIN ({SHA} from htpasswd -s), '%' in the password must arrive unescaped

$s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a01 AUTHENTICATE PLAIN ' . encode_base64("\0carol\0carol%20pw", ''));
$s->ok('authenticate plain {SHA}');
like($t->read_file('backend.log'), qr/^imap ok user=carol pass=carol%20pw$/m,
	'backend got the password with % as typed');

# wrong password and unknown user: the same answer, the backend is never reached

my $before = backend_lines($t);
$s = Test::Nginx::IMAP->new();
$s->read();
my $t0 = time();
$s->send('a01 LOGIN alice wrong');
my $wrong = $s->read();
my $elapsed = time() - $t0;
like($wrong, qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/, 'wrong password refused');
cmp_ok($elapsed, '>=', 0.9, 'Auth-Wait 1s honoured before the answer');

# after Auth-Wait the session goes on: a retry with the right password works
$s->send('a02 LOGIN alice alice-secret');
$s->ok('retry on the same connection after a failure');

$s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a01 LOGIN nosuchuser whatever');
my $unknown = $s->read();
like($unknown, qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/, 'unknown user refused');
is(backend_lines($t), $before + 1, 'backend reached only by the successful retry');

# mail_auth_fail_wait 0: nginx closes the session after the failure

$s = Test::Nginx::IMAP->new(PeerAddr => '127.0.0.1:' . port(8145));
$s->read();
$s->send('a01 LOGIN alice wrong');
like($s->read(), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login/, 'no wait: refused');
ok(!defined $s->read(), 'no wait: connection closed');

# real clients: Python imaplib (LOGIN and AUTHENTICATE PLAIN), curl

my ($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'dave', $pw{dave}, 'plain');
is($rc, 0, 'imaplib AUTHENTICATE PLAIN, UTF-8 password (SHA-512-crypt from openssl)') or diag($out);
like($t->read_file('backend.log'), qr/^imap ok user=dave pass=\Q$pw{dave}\E$/m,
	'backend got the UTF-8 password bytes');

($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'erin', $pw{erin});
is($rc, 0, 'imaplib LOGIN, Dovecot-style hash, ":" in password') or diag($out);

($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'erin', 'nope');
is($rc, 1, 'imaplib wrong password refused') or diag($out);

SKIP: {
	skip 'curl not installed', 2 unless have_tool('curl');
	my $url = 'imap://127.0.0.1:' . port(8143) . '/';
	is(system('curl', '-s', '-o', '/dev/null', '--max-time', '10', $url,
		'--user', 'alice:alice-secret') >> 8, 0, 'curl imap login');
	isnt(system('curl', '-s', '-o', '/dev/null', '--max-time', '10', $url,
		'--user', 'alice:bad') >> 8, 0, 'curl imap wrong password fails');
}

# one decision line per login in the error log, with the reason

my $errlog = $t->read_file('error.log');
like($errlog, qr/mail_auth: user="alice" client=127\.0\.0\.1 protocol=imap method=plain attempt=\d+ result=invalid reason="wrong password"/,
	'decision logged with user, client, protocol, result, reason');

###############################################################################
