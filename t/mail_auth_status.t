#!/usr/bin/perl

# Tests for ngx-mail-auth: mail_auth_status, the shared counters in Prometheus text format:
# requests by protocol/method/result, cache hits/misses, limiter refusals, store errors and the
# verification/decision time histograms, counted by both workers and kept across a reload; many
# clients at once in both workers and reloads meanwhile: every answer counted once.

###############################################################################

use warnings;
use strict;

use Test::More;
use POSIX ();

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http mail imap/);
workers_can_read($t);
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

my $d = $t->testdir();
system("htpasswd -cbB -C 5 $d/users alice alice-pw 2>/dev/null") == 0 or die;
system("htpasswd -bB -C 5 $d/users victim victim-pw 2>/dev/null") == 0 or die;
system("htpasswd -bs $d/users carol carol-pw 2>/dev/null") == 0 or die;
system("cp $d/users $d/users2") == 0 or die;

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_cache zone=creds:1m ttl=60s;
    mail_auth_limit zone=brute:1m user=2/m;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 1s;
        }

        location = /auth2 {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users2;
            mail_auth_backend imap 127.0.0.1:8144;
        }

        location = /metrics {
            mail_auth_status;
        }

        # the counters for the operator only, and a public page of the same server that
        # includes a location by subrequest (SSI): no access phase runs for a subrequest
        location = /metrics-private {
            deny all;
            mail_auth_status;
        }
        location = /page {
            ssi on;
            default_type text/html;
            alias %%TESTDIR%%/page.html;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", alice => 'alice-pw');
$t->write_file('page.html', "before <!--#include virtual=\"/metrics-private\" --> after\n");
$t->run()->plan(33);
$t->waitforsocket('127.0.0.1:' . port(8144));

###############################################################################

sub login {
	my ($uri, $user, $pass, %more) = @_;
	return auth_http($uri, 'Auth-Method' => 'plain', 'Auth-User' => $user,
		'Auth-Pass' => $pass, 'Auth-Protocol' => 'imap', 'Client-IP' => '192.0.2.7',
		%more) // '';
}

sub metrics {
	return http_get('/metrics') // '';
}

sub value {
	my ($text, $series) = @_;
	return $text =~ /^\Q$series\E (\S+)\r?$/m ? $1 : undef;
}

my $m = metrics();
like($m, qr/^HTTP\/1\.[01] 200/, 'status answers 200');
like($m, qr/^Content-Type: text\/plain; version=0\.0\.4; charset=utf-8\r$/m,
	'Prometheus text content type');
is(value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="ok"}'), 0,
	'nothing counted before any request');
like($m, qr/^# TYPE mail_auth_verify_duration_seconds histogram\r?$/m, 'histogram type line');

# a real IMAP login through nginx mail, then the same credentials again (cached verdict)

my ($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'alice', 'alice-pw');
is($rc, 0, 'imaplib login through nginx mail') or diag($out);
like(login('/auth', 'alice', 'alice-pw'), qr/^Auth-Status: OK\r$/m, 'second login (cached)');
like(login('/auth', 'alice', 'wrong'), qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m,
	'wrong password');
like(login('/auth', 'ghost', 'x', 'Auth-Protocol' => 'pop3'), qr/Invalid login/,
	'unknown user over pop3');

# the limiter: user=2/m, the third failure for "victim" is refused without a password check

login('/auth', 'victim', "bad$_") for 1 .. 2;
like(login('/auth', 'victim', 'bad3'), qr/Invalid login/, 'victim refused by the limiter');

# a store error: the second location's file is gone

unlink("$d/users2") or die;
select undef, undef, undef, 1.5;    # the store looks at its file at most once a second
like(login('/auth2', 'alice', 'alice-pw'), qr/^Auth-Status: \[UNAVAILABLE\] Temporary server problem/m,
	'missing store: temporary failure');

# a malformed auth_http request and something that is not auth_http at all

like(login('/auth', 'alice', 'bad%escape'), qr/Invalid login/, 'bad escape: refused');
like(http_get('/auth'), qr/^HTTP\/1\.[01] 400/, 'not auth_http: 400');

$m = metrics();
is(value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="ok"}'), 2,
	'two OK logins, from both workers');
is(value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="invalid"}'), 3,
	'three wrong passwords');
is(value($m, 'mail_auth_requests_total{protocol="pop3",method="plain",result="unknown-user"}'), 1,
	'unknown user counted by protocol');
is(value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="rate-limited"}'), 1,
	'rate-limited by protocol');
is(value($m, 'mail_auth_limiter_refusals_total'), 1, 'limiter refusals');
is(value($m, 'mail_auth_limiter_refused_user_total'), 1,
	'limiter zone counter (inherited from http level)');
is(value($m, 'mail_auth_store_errors_total'), 1, 'store errors');
is(value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="bad-request"}'), 1,
	'malformed request');
is(value($m, 'mail_auth_requests_total{protocol="unknown",method="unknown",result="bad-request"}'), 1,
	'not an auth_http request');
is(value($m, 'mail_auth_cache_hits_total'), 1, 'one cache hit (the second alice login)');
cmp_ok(value($m, 'mail_auth_cache_misses_total'), '>=', 4, 'cache misses');
my $verified = value($m, 'mail_auth_verify_duration_seconds_count');
is($verified, value($m, 'mail_auth_cache_misses_total'),
	"every cache miss (the unknown user's check against the timing template included) ran a timed verification");
is(value($m, 'mail_auth_decision_duration_seconds_count'), 10, 'every answered request timed');

# counters live in shared memory and survive a reload

system("cp $d/users $d/users2") == 0 or die;
$t->reload();
ok(wait_for(5, sub { $t->read_file('error.log') =~ /gracefully shutting down/ }),
	'reloaded: old workers shutting down');
select undef, undef, undef, 0.5;
like(login('/auth', 'alice', 'alice-pw'), qr/^Auth-Status: OK\r$/m, 'login after the reload');
$m = metrics();
is(value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="ok"}'), 3,
	'counters kept across the reload, counted on by the new workers');

# many clients at once, in both workers, while nginx reloads twice: every answer is counted, once
# (by the workers of both generations; the clients go on until both reloads are seen)

$m = metrics();
my ($ok0, $all0) = (value($m, 'mail_auth_requests_total{protocol="imap",method="plain",result="ok"}'),
	value($m, 'mail_auth_decision_duration_seconds_count'));
my $stop = "$d/clients-stop";
my @kids;
for my $k (1 .. 6) {
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		my ($ok, $answered, $sent) = (0, 0, 0);
		my $deadline = time() + 30;
		while ($sent < 50 || (!-e $stop && time() < $deadline)) {
			my ($user, $pw) = $sent % 2 ? ('alice', 'alice-pw') : ('carol', 'carol-pw');
			my $r = login('/auth', $user, $pw);
			$sent++;
			$answered++ if $r =~ /^Auth-Status: /m;
			$ok++ if $r =~ /^Auth-Status: OK\r$/m;
		}
		open(my $fh, '>', "$d/client$k") or POSIX::_exit(1);
		print $fh "$ok $answered $sent\n";
		close $fh;
		POSIX::_exit(0);
	}
	push @kids, $pid;
}
my $shutdowns = sub { scalar(() = $t->read_file('error.log') =~ /gracefully shutting down/g) };
my $before = $shutdowns->();
my $reloads = 0;
for my $n (1 .. 2) {
	select undef, undef, undef, 0.3;
	$t->reload();
	$reloads++ if wait_for(10, sub { $shutdowns->() >= $before + $n });
}
select undef, undef, undef, 0.3;
open(my $fh, '>', $stop) or die "$stop: $!\n";
close $fh;
my $bad = 0;
for my $pid (@kids) {
	waitpid($pid, 0);
	$bad++ if $? != 0;
}
my ($ok, $answered, $sent) = (0, 0, 0);
for my $k (1 .. 6) {
	my ($o, $n, $s) = $t->read_file("client$k") =~ /^(\d+) (\d+) (\d+)$/m;
	$bad++, next unless defined $s;
	($ok, $answered, $sent) = ($ok + $o, $answered + $n, $sent + $s);
}
ok($reloads == 2 && !$bad && $answered > 0.9 * $sent && $ok > 0.9 * $answered,
	"6 clients at once through 2 reloads: $sent logins, $answered answered, $ok OK"
	. " ($reloads reloads seen, $bad clients failed)");
is(value($m = metrics(), 'mail_auth_requests_total{protocol="imap",method="plain",result="ok"}') - $ok0,
	$ok, 'every OK answer counted once, across the reloads');
is(value($m, 'mail_auth_decision_duration_seconds_count') - $all0, $answered,
	'every answer timed once');

# the operator's counters asked by subrequest from a public page: refused (before, the SSI
# include printed them all, past the location's deny)
SKIP: {
skip 'nginx without ssi', 2 unless $t->has_module('ssi');
my $page = http_get('/page');
unlike($page, qr/mail_auth_requests_total/, 'SSI include of a status location behind deny: no counters');
like($t->read_file('error.log'), qr/\[warn\].*mail_auth_status: a subrequest is refused/, 'logged');
}

###############################################################################
