#!/usr/bin/perl

# Tests for ngx-mail-auth: the brute-force budget shared by a fleet of proxies
# (mail_auth_redis + mail_auth_limit redis=). Three nginx instances (each its own prefix,
# ports and shared-memory zones, two workers each) share one throwaway redis-server the test
# starts on loopback; real IMAP clients (imaplib, bound to 127.0.0.x source addresses so that
# nginx mail sends each as Client-IP) log in through the mail proxies:
#   a) a brute force spread round-robin over the three is held to the one budget (ip=3/m:
#      3 password checks in all, not 3 per proxy)
#   b) a ban made through one proxy refuses on the others; the second refusal there comes from
#      the proxy's own zone (the ban it learnt), without asking Redis
#   c) Redis killed mid-run: logins go on, limited by each proxy's own zone (a right password
#      still logs in, the local budget still bans), a log line and a counter say so
#   d) Redis back (restarted, empty): shared limiting resumes without a reload
#   e) 12 wrong passwords from one client at once, spread over the three: still 3 password
#      checks in all (attempts in flight count in Redis)
#   f) Redis stops answering (SIGSTOP): a login waits at most timeout=, then the proxy's own
#      zone decides; never a temporary failure
#   i) one stale password sent on 6 connections at once (bcrypt cost 12: the checks overlap)
#      counts once in Redis too: the client is not banned there, another proxy checks its next
#      guess
# and nginx -t refusing an unknown redis= name, a missing key_file=, and no thread pool.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use POSIX qw//;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my ($redis) = grep { -x } qw| /usr/bin/redis-server /usr/local/bin/redis-server |;
plan(skip_all => 'redis-server not installed (redis-server package)') unless $redis;
plan(skip_all => 'python3 not installed') unless have_tool('python3');
plan(skip_all => 'redis-cli not installed (redis-tools package)') unless have_tool('redis-cli');

my $t = Test::Nginx->new()->has(qw/mail imap http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'no 127.0.0.2 on this host (Linux answers all of 127/8)')
	unless IO::Socket::INET->new(LocalAddr => '127.0.0.2', Proto => 'udp');
workers_can_read($t);

my $d = $t->testdir();
my $redis_port = port(8379);
mkdir "$d/redis" or die;

# the redis-server's pid while it runs: stopped whatever happens, the test's exit code kept
my $redis_pid;
my $test_pid = $$;
END {
	local $?;
	if ($redis_pid && $$ == $test_pid) { kill 'KILL', $redis_pid; waitpid($redis_pid, 0); }
}

sub redis_start {
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', "$d/redis.log";
		open STDERR, '>&', \*STDOUT;
		no warnings qw/ exec /;
		exec($redis, '--port', $redis_port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
			'--dir', "$d/redis", '--daemonize', 'no');
		POSIX::_exit(127);
	}
	$redis_pid = $pid;
	return wait_for(10, sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$redis_port") });
}

sub redis_kill {
	kill 'KILL', $redis_pid;
	waitpid($redis_pid, 0);
	undef $redis_pid;
}

# the fleet's secret: the same file for every proxy
$t->write_file('fleet.key', "a secret shared by the proxies of the fleet\n");
my ($hrc, $bob) = run_tool('htpasswd', '-nbB', '-C', '12', 'bob', 'bob-pw');
die "htpasswd: $bob" if $hrc != 0;
$bob =~ s/\s+\z//;
$t->write_file('users', "alice:{PLAIN}alice-pw\n$bob\n");

# Instance $n's configuration: its own http and imap ports, the same users and Redis.
sub conf {
	my ($n) = @_;
	my $http = 8080 + $n;
	my $imap = 8143 + 100 * $n;
	my $imap_tls = $imap + 50;
	my $imap_tls_bad = $imap + 60;
	return <<"EOF";

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_redis fleet 127.0.0.1:%%PORT_8379%% key_file=$d/fleet.key timeout=500ms retry=1s;
    # TLS asked of a server that speaks none: every handshake fails
    mail_auth_redis tlsfleet 127.0.0.1:%%PORT_8379%% key_file=$d/fleet.key tls=on timeout=500ms retry=1s;
    # a server that answers a TLS handshake with something else and closes
    mail_auth_redis tlsbad 127.0.0.1:%%PORT_8380%% key_file=$d/fleet.key tls=on timeout=500ms retry=1s;

    server {
        listen       127.0.0.1:%%PORT_$http%%;
        server_name  localhost;

        mail_auth_passwd_file $d/users;
        mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
        mail_auth_fail_wait 0;
        mail_auth_limit zone=brute:1m ip=3/m user=100/m ban=120s redis=fleet;

        location = /auth { mail_auth; }
        location = /auth-tls {
            mail_auth;
            mail_auth_limit zone=tlsbrute:1m ip=3/m user=100/m ban=120s redis=tlsfleet;
        }
        location = /auth-tls-bad {
            mail_auth;
            mail_auth_limit zone=tlsbad:1m ip=3/m user=100/m ban=120s redis=tlsbad;
        }
        location = /metrics { mail_auth_status; }
    }
}

mail {
    auth_http  127.0.0.1:%%PORT_$http%%/auth;

    server {
        listen     127.0.0.1:%%PORT_$imap%%;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:%%PORT_$imap_tls%%;
        protocol   imap;
        auth_http  127.0.0.1:%%PORT_$http%%/auth-tls;
    }

    server {
        listen     127.0.0.1:%%PORT_$imap_tls_bad%%;
        protocol   imap;
        auth_http  127.0.0.1:%%PORT_$http%%/auth-tls-bad;
    }
}

EOF
}

redis_start() or die "redis-server did not start, see redis.log\n";

my @nginx = ($t, Test::Nginx->new(), Test::Nginx->new());
for my $n (0 .. 2) {
	workers_can_read($nginx[$n]);
	$nginx[$n]->write_file_expand('nginx.conf', conf($n));
}
$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", alice => 'alice-pw');
# (h) a server that answers anything with a line and closes: no TLS handshake completes
$t->run_daemon(sub {
	my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1:' . port(8380), Listen => 16, Reuse => 1)
		or die "listen: $!\n";
	while (my $c = $l->accept()) {
		$c->sysread(my $buf, 4096);
		$c->syswrite("-ERR not TLS\r\n");
		close $c;
	}
});
$_->run() for @nginx;
# (each instance checks its error log for alerts when it goes: 2 tests each)
$t->plan(35 + 4 + 3);
$t->waitforsocket('127.0.0.1:' . port($_)) or die "no backend\n" for 8144, 8380;

###############################################################################

# One IMAP login from $src through proxy $n: 'OK' or 'FAIL ...'.
sub login {
	my ($n, $src, $user, $pass) = @_;
	return login_at(8143 + 100 * $n, $src, $user, $pass);
}

# The same through the IMAP listener on port($port).
sub login_at {
	my ($port, $src, $user, $pass) = @_;
	local $ENV{MAIL_CLIENT_SOURCE} = $src;
	open my $fh, '-|', 'python3', "$FindBin::Bin/lib/mail_client.py", 'imap', '127.0.0.1', port($port),
		$user, $pass or die "python3: $!\n";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	$out =~ s/\s+\z//;
	return $out;
}

# The decision lines proxy $n logged for client $ip.
sub lines {
	my ($n, $ip) = @_;
	return grep { /mail_auth: user=.* client=\Q$ip\E / } split /\n/, $nginx[$n]->read_file('error.log');
}

# The results proxy $n (all three if undef) logged for client $ip, in order.
sub results {
	my ($n, $ip) = @_;
	my @n = defined $n ? ($n) : (0 .. 2);
	return join ',', map { /result=([\w-]+)/ ? $1 : '?' } map { lines($_, $ip) } @n;
}

# Counters in Redis with a ban (the hashes the admission and settlement scripts keep).
sub redis_bans {
	my ($rc, $keys) = run_tool('redis-cli', '-p', $redis_port, '--scan', '--pattern', 'mail_auth:c:*');
	my $n = 0;
	for my $k (split /\n/, $keys) {
		my ($rc2, $ban) = run_tool('redis-cli', '-p', $redis_port, 'HGET', $k, 'ban');
		$n++ if $ban =~ /^[1-9]/;
	}
	return $n;
}

sub count { my ($list, $what) = @_; return scalar grep { $_ eq $what } split /,/, $list; }

sub metric {
	my ($n, $name) = @_;
	my $m = http_get('/metrics', socket => IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080 + $n))) // '';
	return $m =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

###############################################################################

# a) 6 wrong passwords from one client, round-robin over the three proxies (2 each: within
# each proxy's own ip=3/m): 3 password checks in all, the rest refused unchecked

for my $i (0 .. 5) {
	login($i % 3, '127.0.0.2', 'alice', "guess-$i");
}
my $all = results(undef, '127.0.0.2');
is(count($all, 'invalid'), 3, 'a) round-robin brute force: 3 password checks over 3 proxies (ip=3/m)')
	or diag($all);
is(count($all, 'rate-limited'), 3, 'a) the other 3 refused unchecked');
for my $n (0 .. 2) {
	like(login($n, '127.0.0.2', 'alice', 'alice-pw'), qr/^FAIL/, "a) the right password refused on proxy $n");
}

# b) a ban made through proxy 0 refuses on 1 and 2 (Redis said so), and again on 1 from its
# own zone

login(0, '127.0.0.3', 'alice', "wrong-$_") for 1 .. 3;
is(results(0, '127.0.0.3'), 'invalid,invalid,invalid', 'b) banned through proxy 0');
# (the settlements reach Redis from proxy 0's queue a moment after the answers)
my $bans = redis_bans();
wait_for(5, sub { redis_bans() > $bans });
like(login(1, '127.0.0.3', 'alice', 'alice-pw'), qr/^FAIL/, 'b) the right password refused on proxy 1');
like(login(2, '127.0.0.3', 'alice', 'alice-pw'), qr/^FAIL/, 'b) and on proxy 2');
my @l1 = lines(1, '127.0.0.3');
ok(@l1 == 1 && $l1[0] =~ /result=rate-limited reason="too many failed logins from 127.0.0.3 \(limit 3\/60s, shared by redis \\x22fleet\\x22\)"/,
	'b) proxy 1 refused it on the shared ban') or diag(join "\n", @l1);
like(login(1, '127.0.0.3', 'alice', 'alice-pw'), qr/^FAIL/, 'b) refused again on proxy 1');
@l1 = lines(1, '127.0.0.3');
ok(@l1 == 2 && $l1[1] =~ /result=rate-limited reason="too many failed logins from 127.0.0.3 \(limit 3\/60s\)"/,
	'b) the second time from proxy 1\'s own zone (the ban it learnt)') or diag(join "\n", @l1);

# e) 12 wrong passwords from one client at once, 4 through each proxy: the attempts in flight
# count in Redis, so 3 password checks in all (each proxy's zone alone would allow 3 each)

{
	my @kids;
	for my $i (0 .. 11) {
		my $pid = fork() // die "fork: $!\n";
		if ($pid == 0) {
			login($i % 3, '127.0.0.7', 'alice', "parallel-$i");
			POSIX::_exit(0);
		}
		push @kids, $pid;
	}
	waitpid($_, 0) for @kids;
	my $par = results(undef, '127.0.0.7');
	is(count($par, 'invalid'), 3, 'e) 12 guesses at once over 3 proxies: 3 password checks (ip=3/m)')
		or diag($par);
	is(count($par, 'rate-limited'), 9, 'e) the other 9 refused unchecked') or diag($par);
}

# c) Redis killed mid-run: each proxy limits on its own

redis_kill();
like(login(0, '127.0.0.4', 'alice', 'alice-pw'), qr/^OK/, 'c) Redis down: the right password logs in');
login(0, '127.0.0.4', 'alice', "wrong-$_") for 1 .. 3;
like(login(0, '127.0.0.4', 'alice', 'alice-pw'), qr/^FAIL/, 'c) Redis down: the local budget still bans');
is(results(0, '127.0.0.4'), 'ok,invalid,invalid,invalid,rate-limited', 'c) results on proxy 0');
like(login(1, '127.0.0.4', 'alice', 'other-guess'), qr/^FAIL/, 'c) a guess on proxy 1');
is(results(1, '127.0.0.4'), 'invalid', 'c) checked there: proxy 1 has its own budget while Redis is down');
like($t->read_file('error.log'), qr/mail_auth_redis "fleet" \(127\.0\.0\.1:\d+\): .*limiting with this proxy's own counters only/,
	'c) logged');
ok((metric(0, 'mail_auth_limiter_redis_unavailable_total') // 0) >= 4, 'c) counted');
unlike(join('', map { $_->read_file('error.log') } @nginx), qr/\[(alert|emerg)\]|result=internal-error|result=store-error/,
	'c) no internal error or temporary failure anywhere');

# d) Redis back (empty): shared limiting resumes. Each worker tries Redis again at most once
# per retry=1s after a failure: past that, every worker's next decision asks it again.

redis_start() or die "redis-server did not restart\n";
select undef, undef, undef, 1.5;
for my $n (0, 1) {
	wait_for(10, sub {
		login($n, '127.0.0.6', 'alice', 'alice-pw');
		$nginx[$n]->read_file('error.log') =~ /mail_auth_redis "fleet" .*usable again/;
	});
}
ok((grep { $_->read_file('error.log') =~ /usable again after .*shared limiting resumed/ } @nginx[0, 1]) == 2,
	'd) the proxies that saw it down logged the recovery');
login($_, '127.0.0.5', 'alice', "again-$_") for 0 .. 2;
like(login(0, '127.0.0.5', 'alice', 'alice-pw'), qr/^FAIL/, 'd) one failure on each proxy: the 4th attempt refused');
is(results(undef, '127.0.0.5'), 'invalid,rate-limited,invalid,invalid', 'd) refused by the shared budget');

# f) Redis stops answering (SIGSTOP): the admission waits timeout=500ms, then the proxy's own
# zone decides: a right password logs in, no temporary failure; the cause is logged again

{
	my $down = qr/mail_auth_redis "fleet" .*limiting with this proxy's own counters only/;
	my $before = () = $t->read_file('error.log') =~ /$down/g;
	ok(stop_process($redis_pid), 'f) Redis stopped (SIGSTOP)');
	like(login(0, '127.0.0.8', 'alice', 'alice-pw'), qr/^OK/, 'f) Redis not answering: the right password logs in');
	is(results(0, '127.0.0.8'), 'ok', 'f) decided by the proxy\'s own zone, no temporary failure');
	my $after = () = $t->read_file('error.log') =~ /$down/g;
	ok($after > $before, 'f) logged') or diag("$before -> $after");
	kill 'CONT', $redis_pid;
}

# g) tls=on and a server that never answers the handshake (a redis-server without TLS waits for
# more of what it takes for a command): the Redis client shook hands with no time bound, so the
# login was never answered; now a failure like any other, bounded by the timeouts

like(login_at(8193, '127.0.0.9', 'alice', 'alice-pw'), qr/^OK/,
	'g) TLS handshake unanswered: the right password logs in (the local zone decides)');
like($t->read_file('error.log'), qr/mail_auth_redis "tlsfleet" .*TLS handshake failed.*own counters only/,
	'g) logged as Redis unusable');

# h) tls=on and a server that refuses the handshake (it answers something else and closes): the
# Redis client unwrapped the handshake's error, the panic failed every login of the location (a
# temporary failure) and the proxy never fell back to its own counters

like(login_at(8203, '127.0.0.10', 'alice', 'alice-pw'), qr/^OK/,
	'h) TLS handshake refused: the right password logs in (the local zone decides)');
like($t->read_file('error.log'), qr/mail_auth_redis "tlsbad" .*TLS handshake failed.*own counters only/,
	'h) logged as Redis unusable');

# i) a burst of one stale password through proxy 0 (3 checked: ip=3/m in flight, here and in
# Redis): counted once in Redis, so proxy 1, whose own zone never saw the client, checks its
# next guess (before, Redis counted the 3 failures and banned the client for the fleet)

{
	local $ENV{IMAP_BURST_SOURCE} = '127.0.0.11';
	local $ENV{IMAP_BURST_SAME} = '1';
	open my $burst, '-|', 'python3', "$FindBin::Bin/lib/imap_burst.py", '127.0.0.1', port(8143), 6, 'bob',
		'stale-pw', 5 or die "imap_burst.py: $!\n";
	my $out = join '', <$burst>;
	close $burst;
	like($out, qr/^connected 6\n.*"ok": 0,/s, 'i) 6 connections, no login') or diag($out);
}
my $burst;
wait_for(15, sub { $burst = results(0, '127.0.0.11'); split(/,/, $burst) >= 6 });
ok(count($burst, 'invalid') >= 1 && count($burst, 'invalid') + count($burst, 'rate-limited') == 6,
	"i) the burst: at most the budget checked ($burst)");
# the settlements reach Redis through each worker's queue (sent every millisecond)
select undef, undef, undef, 0.5;
login(1, '127.0.0.11', 'bob', 'guess-1');
is(results(1, '127.0.0.11'), 'invalid', 'i) counted once in Redis: another proxy checks the next guess');

###############################################################################

# nginx -t: an unknown redis name, no key_file, no thread pool
my $nt = sub { nginx_t_with($t, @_) };
my ($code, $msg) = $nt->(qr/redis=fleet;/, 'redis=flet;');
ok($code != 0 && $msg =~ /no "mail_auth_redis flet"/, 'nginx -t: unknown redis name') or diag($msg);
($code, $msg) = $nt->(qr/ key_file=\S+/, '');
ok($code != 0 && $msg =~ /needs key_file=PATH/, 'nginx -t: no key_file') or diag($msg);
($code, $msg) = $nt->(qr/location = \/auth \{/, "location = /auth {\n mail_auth_thread_pool off;");
ok($code != 0 && $msg =~ /"mail_auth_limit redis=" needs a thread pool/, 'nginx -t: no thread pool') or diag($msg);

$_->stop() for reverse @nginx;
# the instances go now (each checks its log for alerts), before the plan is checked
undef $nt;
@nginx = ();
undef $t;

###############################################################################
