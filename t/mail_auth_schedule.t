#!/usr/bin/perl

# Tests for ngx-mail-auth: costly verifications are scheduled by the worker's event loop, not by
# pool threads waiting for a turn.
# 1. Many clients at once with the same credential (a mail client opening 12 connections): one
#    bcrypt is computed, the others wait for its verdict (the verification counter moves by 1).
# 2. Costly work queued in the module never holds a pool thread: a lookup that needs the pool
#    (SQLite with APOP) is answered while 6 bcrypt(12) logins wait their turn on a 2-thread
#    pool with one verification at a time. (Before: the second pool thread slept in the gate
#    and the lookup queued behind every bcrypt.)
# 3. With the module's defaults and a pool far smaller than the load (1 thread, queue of 1),
#    20 concurrent costly logins are all verified: the module's queue holds them, the pool
#    never overflows.
# 4. A request nginx terminates while the module holds it (a bad chunk of a body being
#    discarded), its job on the pool or queued behind another: the worker survives (it crashed:
#    the request was freed under the job), and the login it queued behind is answered.

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
plan(skip_all => 'sqlite3 not installed') unless have_tool('sqlite3');
plan(skip_all => 'timing test: valgrind runs one thread at a time')
	if $ENV{TEST_NGINX_VALGRIND};

my $d = $t->testdir();
system('htpasswd', '-cbB', '-C', '12', "$d/users", 'slow', 'slow-password') == 0 or die;

open my $sql, '<', "$FindBin::Bin/../scripts/schema.sql" or die "schema.sql: $!\n";
my $schema = do { local $/; <$sql> };
close $sql;
$schema .= "INSERT INTO users (name, password) VALUES ('pop', '{PLAIN}pop-secret');\n";
open my $sq, '|-', 'sqlite3', "$d/users.db" or die "sqlite3: $!\n";
print $sq $schema;
close $sq or die "sqlite3 failed\n";
chmod 0644, "$d/users.db";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;
thread_pool two threads=2;
thread_pool tiny threads=1 max_queue=1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:1143;
    mail_auth_backend pop3 127.0.0.1:1110;
    mail_auth_fail_wait 0;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /cached {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_cache zone=verdicts:1m;
        }

        location = /one-at-a-time {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_thread_pool two;
            mail_auth_verify_concurrency 1 queue=32;
        }

        # one attempt a minute per client: a success gives it back
        location = /held-limited {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_thread_pool two;
            mail_auth_limit zone=held:64k ip=1/m;
        }

        location = /sqlite {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/users.db;
            mail_auth_thread_pool two;
        }

        location = /tiny-pool {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_thread_pool tiny;
            # the default on 2 CPUs, set here so that the test does not depend on the machine's
            # CPUs (the default, CPUs - 1, overflows a pool of 1 thread and a queue of 1 from 4)
            mail_auth_verify_concurrency 1;
        }

        location = /metrics {
            mail_auth_status;
        }
    }
}

EOF

$t->run()->plan(17);

###############################################################################

my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';

sub request {
	my ($uri, $user, $pass, $ip, %extra) = @_;
	my $method = $extra{method} // 'plain';
	my $proto = $extra{protocol} // 'imap';
	my $salt = $extra{salt} ? "Auth-Salt: $extra{salt}\r\n" : '';
	return "GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: $method\r\nAuth-User: $user\r\n"
		. "Auth-Pass: $pass\r\n${salt}Auth-Protocol: $proto\r\nAuth-Login-Attempt: 1\r\n"
		. "Client-IP: $ip\r\n\r\n";
}

sub start { return auth_start(@_); }

sub finish { return auth_finish($_[0], 60); }

sub verifications {
	my $m = http_get('/metrics');
	return $m =~ /^mail_auth_verify_duration_seconds_count (\d+)/m ? $1 : -1;
}

# 1. 12 connections at once with the same right password, then 12 with the same wrong one

my $before = verifications();
my @s = map { start(request('/cached', 'slow', 'slow-password', "127.0.0.$_")) } 1 .. 12;
my @answers = map { finish($_) } @s;
is(scalar(grep { $_ eq 'OK' } @answers), 12, 'same credential x12: all OK') or diag("@answers");
is(verifications() - $before, 1, 'same credential x12: one bcrypt computed, the others took its verdict');

$before = verifications();
@s = map { start(request('/cached', 'slow', 'not-it', "127.0.1.$_")) } 1 .. 12;
@answers = map { finish($_) } @s;
is(scalar(grep { $_ eq $INVALID } @answers), 12, 'same wrong password x12: all refused')
	or diag("@answers");
is(verifications() - $before, 1, 'same wrong password x12: one bcrypt computed');

# 2. 6 distinct costly logins, one at a time on a 2-thread pool; meanwhile an APOP login to the
# SQLite store (its lookup runs on the same pool)

my $t0 = time();
@s = map { start(request('/one-at-a-time', 'slow', "guess-$_", "127.0.2.$_")) } 1 .. 6;
select undef, undef, undef, 0.1;
my $t1 = time();
my $apop = finish(start(request('/sqlite', 'pop', '0' x 32, '127.0.3.1',
	method => 'apop', protocol => 'pop3', salt => '<1.2@localhost>')));
my $lookup = time() - $t1;
@answers = map { finish($_) } @s;
my $all = time() - $t0;
is($apop, '[AUTH] Invalid login or password', 'a pool lookup during the costly queue: answered');
cmp_ok($lookup, '<', $all / 3, 'a pool lookup does not wait behind queued costly verifications')
	or diag(sprintf('lookup %.2f s, the 6 bcrypts %.2f s', $lookup, $all));
is(scalar(grep { $_ eq $INVALID } @answers), 6, 'the 6 queued verifications all ran')
	or diag("@answers");

# 3. one costly verification at a time, a pool of 1 thread with a queue of 1, 20 distinct costly
# logins at once

@s = map { start(request('/tiny-pool', 'slow', $_ % 4 ? "guess-$_" : 'slow-password', "127.0.4.$_")) } 1 .. 20;
@answers = map { finish($_) } @s;
my %seen;
$seen{$_}++ for @answers;
is_deeply(\%seen, { 'OK' => 5, $INVALID => 15 },
	'tiny pool, 20 at once: every login verified, none refused');
unlike($t->read_file('error.log'), qr/queue overflow/, 'tiny pool: the pool never overflowed');

# 4. terminated while held: on the pool, then queued behind a running verification

sub chunked {
	my ($uri, $pass, $ip) = @_;
	my $req = request($uri, 'slow', $pass, $ip);
	$req =~ s{ HTTP/1\.0\r\n}{ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n};
	return $req;
}

my $c = start(chunked('/one-at-a-time', 'chunked-1', '127.0.5.1'));
select undef, undef, undef, 0.1;
$c->print("zz\r\n");
my $first = start(request('/one-at-a-time', 'slow', 'slow-password', '127.0.5.2'));
select undef, undef, undef, 0.05;
my $queued = start(chunked('/one-at-a-time', 'chunked-2', '127.0.5.3'));
select undef, undef, undef, 0.05;
$queued->print("zz\r\n");
is(finish($first), 'OK', 'terminated while held: the login before it answered');
is(finish(start(request('/one-at-a-time', 'slow', 'slow-password', '127.0.5.4'))), 'OK',
	'terminated while held: the next login answered');
$c->close();
$queued->close();
my $log = $t->read_file('error.log');
like($log, qr/invalid chunked body/, 'terminated while held: nginx saw the bad chunks');
unlike($log, qr/exited on signal/, 'terminated while held: the worker did not crash');

# ... and its job still settles the limiter: the right password of a request ended while its
# bcrypt ran gives its attempt back (ip=1/m), so the client's next login is let in
$c = start(chunked('/held-limited', 'slow-password', '127.0.5.9'));
select undef, undef, undef, 0.1;
$c->print("zz\r\n");
$c->close();
# its job's decision (logged when the verification is over, the request gone or not)
ok(wait_for(10, sub { $t->read_file('error.log') =~ /client=127\.0\.5\.9 .*result=ok/ }),
	'terminated while held: its job concluded');
is(finish(start(request('/held-limited', 'slow', 'slow-password', '127.0.5.9'))), 'OK',
	'terminated while held: its success settled the limiter (the next login of the client let in)');
is(finish(start(request('/held-limited', 'slow', 'held-guess', '127.0.5.9'))), $INVALID,
	'terminated while held: ... then a wrong password takes the one attempt');
like(finish(start(request('/held-limited', 'slow', 'slow-password', '127.0.5.9'))), qr/^\Q$INVALID\E$/,
	'terminated while held: ... and the right one is refused after it (ip=1/m)');

###############################################################################
