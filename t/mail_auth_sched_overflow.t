#!/usr/bin/perl

# Tests for ngx-mail-auth: the worker's queue of costly verifications when nginx's thread pool
# refuses a post (its queue full: "thread pool queue overflow").
# Thousands of logins wait in the module's queue (mail_auth_verify_concurrency 1 queue=...)
# behind a slow bcrypt that holds the only thread of a pool with a queue of 1; another
# location's login (its own bound of 3) takes the pool's one queue slot, and a second one is
# refused by the pool. Only that login fails: the queued ones stay queued (the jobs still out
# hand out their turns when they are over) and are all verified, one failure per overflow line,
# and the worker survives. (Before: the refusal handed the place to the next queued login,
# whose post was refused too, and so on, one nested call per queued login: with 50 queued all
# 50 failed with it; with 4000 the worker's stack overflowed, SIGSEGV, every held login lost.)

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use IO::Select;

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
plan(skip_all => 'timing test: valgrind runs one thread at a time')
	if $ENV{TEST_NGINX_VALGRIND};

# queued logins: more than the worker's 8 MB stack held nested hand-offs of
my $N = 4000;
my $nofile = `sh -c 'ulimit -n'`;
# the queue of $N needs 2 x $N open files; with fewer, only the queue of 50 runs
my @sizes = (50, ($nofile =~ /^unlimited/ || $nofile > 2 * $N + 200) ? ($N) : ());

my $d = $t->testdir();
# the slow one holds the pool's thread for seconds; the queued ones cost a millisecond each
system('htpasswd', '-cbB', '-C', '16', "$d/users", 'slow', 'slow-password') == 0 or die;
system('htpasswd', '-bB', '-C', '4', "$d/users", 'quick', 'quick-password') == 0 or die;
system('htpasswd', '-cbB', '-C', '4', "$d/other", 'other', 'other-password') == 0 or die;

$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;
thread_pool tiny threads=1 max_queue=1;

events {
    # nginx closes connections still waiting for their request when fewer than 1/16 are free
    worker_connections @{[ 2 * $N ]};
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:1143;
    mail_auth_fail_wait 0;
    mail_auth_thread_pool tiny;

    server {
        listen       127.0.0.1:8080 backlog=4096;
        server_name  localhost;

        location = /queued {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_verify_concurrency 1 queue=@{[ $N + 10 ]};
        }

        location = /other {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/other;
            mail_auth_verify_concurrency 3;
        }
    }
}

EOF

$t->run()->plan(5 * @sizes + 1);
diag("ulimit -n $nofile: the queue of $N left out") if @sizes == 1;

###############################################################################

my $TEMP = qr/^(\[UNAVAILABLE\] )?Temporary server problem/;

sub request {
	my ($uri, $user, $pass) = @_;
	return "GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: $user\r\n"
		. "Auth-Pass: $pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
		. "Client-IP: 127.0.0.1\r\n\r\n";
}

sub start { return auth_start(@_); }

sub finish { return auth_finish($_[0], 120); }

# a queue of 50: only the refused login fails (before: all 50 with it); then one of $N: the
# worker survives (before: its stack overflowed)
my $offset = 0;
for my $n (@sizes) {
	my $slow = start(request('/queued', 'slow', 'slow-password'));
	select undef, undef, undef, 0.3;
	my @queued = map { start(request('/queued', 'quick', 'quick-password')) } 1 .. $n;
	# all read and queued by the worker (the slow bcrypt still holds the pool's thread)
	select undef, undef, undef, 1;
	my $first = start(request('/other', 'other', 'other-password'));
	select undef, undef, undef, 0.2;
	my $refused = finish(start(request('/other', 'other', 'other-password')));

	like($refused, $TEMP, "queue of $n: the login the pool refused: a temporary failure");
	is(finish($slow) . ' ' . finish($first), 'OK OK', "queue of $n: the logins on the pool: OK");
	my %seen;
	$seen{$_ =~ $TEMP ? 'temporary failure' : $_}++ for map { finish($_) } @queued;
	my $failed = $seen{'temporary failure'} // 0;
	is(($seen{OK} // 0) + $failed, $n, "queue of $n: each queued login OK or a temporary failure")
		or diag(explain(\%seen));
	cmp_ok($failed, '<', $n / 10, "queue of $n: the queued logins were not failed with the refused one")
		or diag(explain(\%seen));
	my $log = substr($t->read_file('error.log'), $offset);
	$offset += length($log);
	my $overflows = () = $log =~ /thread pool "tiny" queue overflow/g;
	is($failed + 1, $overflows, "queue of $n: one failed login per overflow of the pool")
		or diag(explain(\%seen));
}
unlike($t->read_file('error.log'), qr/exited on signal/, 'the worker survived');

###############################################################################
