#!/usr/bin/perl

# Tests for ngx-mail-auth: costly verification (bcrypt cost 12) runs on nginx's thread pool, so
# a single worker keeps answering cheap requests while 20 such logins are being verified. The
# same load against a location with "mail_auth_thread_pool off" shows the stall the pool avoids
# (the control: this test would fail if verification ran on the event loop).

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw/ time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');
plan(skip_all => 'timing test: valgrind runs one thread at a time (the thread pool is still covered by the other tests)')
	if $ENV{TEST_NGINX_VALGRIND};

my $d = $t->testdir();
system('htpasswd', '-cbB', '-C', '12', "$d/users", 'slow', 'slow-password') == 0 or die;
open my $fh, '>>', "$d/users" or die;
print $fh "fast:{SSHA}" . "xQQG+ZJozKtKCL0ZUgThzH7zvi+lkuou\n";   # doveadm pw -s SSHA -p 'p w%d:é'
close $fh;

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;

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
            mail_auth_backend imap 127.0.0.1:1143;
        }

        location = /inline {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:1143;
            mail_auth_thread_pool off;
        }
    }
}

EOF

$t->run()->plan(7);

###############################################################################

sub request {
	my ($uri, $user, $pass) = @_;
	return "GET $uri HTTP/1.0\r\nAuth-Method: plain\r\nAuth-User: $user\r\n"
		. "Auth-Pass: $pass\r\nAuth-Protocol: imap\r\nClient-IP: 127.0.0.1\r\n\r\n";
}

# sends $n costly requests without waiting, then times one cheap request; returns
# (cheap latency, cheap answer, time until the last costly answer, all costly answers)
sub under_load {
	my ($uri, $n) = @_;
	my @socks;
	for (1 .. $n) {
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or die "$!\n";
		$s->print(request($uri, 'slow', 'slow-password'));
		push @socks, $s;
	}
	select undef, undef, undef, 0.05;
	my $t0 = time();
	my $cheap = http(request($uri, 'fast', "p%20w%25d:\xc3\xa9"));
	my $latency = time() - $t0;
	my @answers;
	for my $s (@socks) {
		local $/;
		my $sel = IO::Select->new($s);
		push @answers, ($sel->can_read(60) ? <$s> // '' : '');
	}
	return ($latency, $cheap, time() - $t0, @answers);
}

# No absolute time limit (machines and their load differ): the cheap answer must come long
# before the costly ones are done, which it could not if it waited behind them.
my ($latency, $cheap, $all, @costly) = under_load('/auth', 20);
like($cheap, qr/^Auth-Status: OK\r$/m, 'cheap request answered during the bcrypt load');
cmp_ok($latency, '<', $all / 4, 'cheap request not stuck behind 20 bcrypt(12) verifications')
	or diag("latency $latency s, the 20 bcrypts took $all s");
is(scalar(grep { /^Auth-Status: OK\r$/m } @costly), 20, 'all 20 bcrypt logins succeeded');

# a wrong password on the pool is still a failure (the result comes back from the thread)
like(http(request('/auth', 'slow', 'nope')), qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m,
	'wrong bcrypt password refused through the pool');

# control: the same load with the pool off stalls the worker
my ($inline_latency, $inline_cheap) = under_load('/inline', 6);
like($inline_cheap, qr/^Auth-Status: OK\r$/m, 'inline: cheap request answered eventually');
cmp_ok($inline_latency, '>', 0.5, 'inline: cheap request waited for the bcrypts (what the pool prevents)')
	or diag("inline latency $inline_latency s");
note(sprintf("cheap request latency: %.1f ms with the pool, %.1f ms inline", 1000 * $latency, 1000 * $inline_latency));
cmp_ok($inline_latency, ">", 3 * $latency, 'the pool answers the cheap request much sooner');

###############################################################################
