#!/usr/bin/perl

# Tests for ngx-mail-auth: POP3 and SMTP logins through nginx's mail proxy, with real clients
# (poplib, smtplib) and protocol-level ones, to a fake backend that checks what nginx passes on
# (POP3 USER/PASS; SMTP XCLIENT LOGIN= with "xclient on", AUTH PLAIN with "proxy_smtp_auth on").

###############################################################################

use warnings;
use strict;

use Test::More;
use MIME::Base64 qw/ encode_base64 /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::POP3;
use Test::Nginx::SMTP;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail pop3 smtp http/);
workers_can_read($t);

my %pw = (alice => 'alice-secret', bob => 'bob p%ss');
my %hash = (
	alice => make_hash('htpasswd-B', $pw{alice}),
	bob => make_hash('openssl-apr1', $pw{bob}),
);
plan(skip_all => 'htpasswd/openssl not installed') if grep { !defined } values %hash;
$t->write_file('users', join('', map { "$_:$hash{$_}\n" } sort keys %hash));

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
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_backend smtp 127.0.0.1:%%PORT_8026%%;
            mail_auth_fail_wait 1s;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
        pop3_auth  plain;
    }

    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  plain login;
        xclient    on;
    }

    server {
        listen     127.0.0.1:8027;
        protocol   smtp;
        smtp_auth  plain login;
        xclient    off;
        proxy_smtp_auth on;
    }
}

EOF

my $log = $t->testdir() . '/backend.log';
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), $log, %pw);
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), $log, %pw);
$t->run()->plan(18);
$t->waitforsocket('127.0.0.1:' . port(8111));
$t->waitforsocket('127.0.0.1:' . port(8026));

###############################################################################

# POP3 USER/PASS and AUTH PLAIN

my $s = Test::Nginx::POP3->new();
$s->ok('pop3 greeting');
$s->send('USER alice');
$s->ok('pop3 user');
$s->send('PASS alice-secret');
$s->ok('pop3 pass: bcrypt user logged in');
like($t->read_file('backend.log'), qr/^pop3 ok user=alice pass=alice-secret$/m,
	'pop3 backend got the credentials');

$s = Test::Nginx::POP3->new();
$s->read();
$s->send('AUTH PLAIN ' . encode_base64("\0bob\0bob p%ss", ''));
$s->ok('pop3 auth plain, apr1, space and % in password');

$s = Test::Nginx::POP3->new();
$s->read();
$s->send('USER alice');
$s->read();
$s->send('PASS wrong');
like($s->read(), qr/^-ERR \[AUTH\] Invalid login or password/, 'pop3 wrong password refused');

my ($rc, $out) = real_client('pop3', '127.0.0.1', port(8110), 'bob', $pw{bob});
is($rc, 0, 'poplib USER/PASS') or diag($out);
($rc, $out) = real_client('pop3', '127.0.0.1', port(8110), 'nobody', 'x');
is($rc, 1, 'poplib unknown user refused') or diag($out);

# SMTP AUTH PLAIN / LOGIN with XCLIENT: the backend learns the login, never the password

$s = Test::Nginx::SMTP->new();
$s->read();
$s->send('EHLO example.com');
$s->read();
$s->send('AUTH PLAIN ' . encode_base64("\0alice\0alice-secret", ''));
$s->authok('smtp auth plain');
$s->send('QUIT');
$s->read();
ok(wait_for(3, sub { $t->read_file('backend.log') =~ /^smtp xclient user=alice /m }),
	'smtp backend got XCLIENT LOGIN=alice');

$s = Test::Nginx::SMTP->new();
$s->read();
$s->send('EHLO example.com');
$s->read();
$s->send('AUTH LOGIN');
$s->check(qr/^334 /, 'smtp auth login: user prompt');
$s->send(encode_base64('bob', ''));
$s->check(qr/^334 /, 'smtp auth login: password prompt');
$s->send(encode_base64('bob p%ss', ''));
$s->authok('smtp auth login');

$s = Test::Nginx::SMTP->new();
$s->read();
$s->send('EHLO example.com');
$s->read();
$s->send('AUTH PLAIN ' . encode_base64("\0alice\0bad", ''));
$s->check(qr/^535 5\.7\.8 Invalid login or password/, 'smtp wrong password: 535 5.7.8');

($rc, $out) = real_client('smtp', '127.0.0.1', port(8025), 'alice', $pw{alice}, 'login');
is($rc, 0, 'smtplib AUTH LOGIN') or diag($out);
($rc, $out) = real_client('smtp', '127.0.0.1', port(8025), 'alice', 'bad');
like($out, qr/^FAIL 535 /, 'smtplib wrong password gets 535') or diag($out);

# proxy_smtp_auth on: nginx logs in to the backend with the credentials it was given

($rc, $out) = real_client('smtp', '127.0.0.1', port(8027), 'bob', $pw{bob});
is($rc, 0, 'smtplib AUTH PLAIN with proxy_smtp_auth') or diag($out);
ok(wait_for(3, sub { $t->read_file('backend.log') =~ /^smtp ok user=bob pass=bob p%ss$/m }),
	'smtp backend got AUTH PLAIN with the unescaped password');

###############################################################################
