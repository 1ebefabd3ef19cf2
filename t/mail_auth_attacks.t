#!/usr/bin/perl

# Attack tests for ngx-mail-auth: properties an attacker (or an operator's everyday action) must
# not be able to break, each through the real nginx with two workers (reuseport: new
# connections spread over both), real clients and the real store tools.
#   1. a changed password is refused as soon as the store shows the new one, whatever the cache
#      holds: after nginx -s reload, after kill -9 of the workers, and (SQLite) with no operator
#      action at all
#   2. mail_auth_limit bounds the verifications of a burst: 60 concurrent wrong-password
#      requests from one address (bcrypt(10) passwd-file, SQLite), 40 concurrent IMAP LOGINs
#      through the mail proxy: at most the limit (5) are verified, the rest are rate-limited
#   6. the Basic bridge fails closed: no access module means nginx -t fails; a user name Basic
#      cannot carry does not let the client's own Authorization header through
#   8. the per-user limit counts the account, not the spelling (case-insensitive SQLite query)
#   9. a live ban survives pressure on the limiter zone (400 fresh addresses on a 32k zone,
#      20000 on a 1m zone)
#  10. zone names are unambiguous: mail_auth_status, or one name for cache and limiter, are
#      refused by nginx -t
#  12. an account's own Auth-Wait (wait=) is given only with the right password: a guesser
#      gets an unknown user's answer
# Failed logins use distinct wrong passwords: the limiter counts a repeated one once.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use MIME::Base64 qw/ encode_base64 /;
use Time::HiRes qw/ sleep time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";

my $t = Test::Nginx->new()->has(qw/http mail imap auth_basic/);
workers_can_read($t);
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'htpasswd (apache2-utils) not installed') unless have_tool('htpasswd');
plan(skip_all => "mail-auth-user not built ($tool)") unless -x $tool;
plan(skip_all => 'needs Linux /proc (worker processes)') unless -e '/proc/self/stat';

# reloads, kill -9, bursts and floods: not under valgrind (sections 1, 2, 9 are skipped)
my $VALGRIND = $ENV{TEST_NGINX_VALGRIND};
my $PYTHON = system('python3 -c "import imaplib, threading" 2>/dev/null') == 0;

my $d = $t->testdir();

sub htpasswd {
	my (@args) = @_;
	my ($rc, $out) = run_tool('htpasswd', @args);
	die "htpasswd @args: $out" if $rc != 0;
}

sub usertool {
	my ($db, @args) = @_;
	my ($rc, $out) = run_tool($tool, '--sqlite', $db, @args);
	die "mail-auth-user @args: $out" if $rc != 0;
}

# 1: bcrypt stores behind a cache
htpasswd('-cbB', '-C', '5', "$d/p1users", 'reload1', 'old-reload1');
htpasswd('-bB', '-C', '5', "$d/p1users", 'kill1', 'old-kill1');
usertool("$d/p1.db", 'init');
usertool("$d/p1.db", 'add', $_, '--password', "old-$_", '--cost', '5') for qw/ noop2 reload2 kill2 /;

# 2: bcrypt(10)
htpasswd('-cbB', '-C', '10', "$d/p2users", 'alice', 'alice-pw');
htpasswd('-bB', '-C', '10', "$d/p2users", 'bert', 'bert-pw');
usertool("$d/p2.db", 'init');
usertool("$d/p2.db", 'add', 'alice', '--password', 'alice-pw', '--cost', '10');

# 6: the bridge's own htpasswd
htpasswd('-cbB', '-C', '5', "$d/p6htpasswd", 'bob', 'bobpw');

# 8: one account, a case-insensitive query
usertool("$d/p8.db", 'init');
usertool("$d/p8.db", 'add', 'alice', '--password', 'alice-pw', '--cost', '5');

# 9: a cheap scheme, so thousands of failures fit in the run time
htpasswd('-cbs', "$d/p9users", 'victim', 'victim-pw');
# 12: accounts with their own Auth-Wait (Dovecot extra field wait=), one of them disabled
$t->write_file('p12users', "waits:{PLAIN}waits-pw::::::wait=30\n"
	. "waitsoff:{PLAIN}off-pw::::::wait=30 nologin\n");

chmod 0644, glob("$d/*.db"), glob("$d/p*users"), "$d/p6htpasswd";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
    mail_auth_fail_wait 0s;
    mail_auth_log_level info;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /p1file {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/p1users;
            mail_auth_cache zone=p1fcache:1m ttl=600s negative_ttl=10s;
        }

        location = /p1sql {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/p1.db;
            mail_auth_cache zone=p1scache:1m ttl=600s negative_ttl=10s;
        }

        location = /p2file {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/p2users;
            mail_auth_limit zone=p2flimit:1m ip=5/m;
        }

        location = /p2sql {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/p2.db;
            mail_auth_limit zone=p2slimit:1m ip=5/m;
        }

        location = /p2imap {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/p2users;
            mail_auth_limit zone=p2ilimit:1m ip=5/m;
        }

        location = /p6 {
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/p6htpasswd;
        }

        location = /p8 {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/p8.db;
            mail_auth_sqlite_query "SELECT password, enabled, protocols, networks, server, port, backend_user AS user, backend_pass, wait FROM users WHERE name = :user COLLATE NOCASE";
            mail_auth_limit zone=p8limit:1m user=3/m;
        }

        location = /p9 {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/p9users;
            mail_auth_limit zone=brute:32k ip=3/m ban=10m;
        }

        location = /p9big {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/p9users;
            mail_auth_limit zone=brute1m:1m ip=3/m ban=10m;
        }

        location = /p12 {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/p12users;
            mail_auth_backend imap 127.0.0.1:8144;
        }

        # a zone too small for the bans it is given: each client banned at its second failure
        location /p9tiny {
            mail_auth_limit zone=bantiny:32k ip=1/m ban=10m;

            location = /p9tiny {
                mail_auth;
                mail_auth_passwd_file %%TESTDIR%%/p9users;
            }

            location = /p9tiny-metrics {
                mail_auth_status;
            }
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/p2imap;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run()->plan(56);

###############################################################################

my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';
my $t_start = time();

# One auth_http request as nginx mail makes it, on a new connection; returns its Auth-Status
# ('none' if there was no answer).
sub status {
	my ($uri, $user, $pass, $ip, %more) = @_;
	my $r = auth_http($uri, 'Auth-Method' => 'plain', 'Auth-User' => $user,
		'Auth-Pass' => $pass, 'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1,
		'Client-IP' => $ip, %more);
	return 'none' unless defined $r;
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

sub log_size { return length $t->read_file('error.log'); }

# The decision lines logged since offset $from for a client address: [result, worker pid, line].
sub decisions {
	my ($from, $client) = @_;
	my $log = substr($t->read_file('error.log'), $from);
	return map { [/ result=(\S+) /, /\[\w+\] (\d+)#/, $_] }
		grep { / mail_auth: user="[^"]*" client=\Q$client\E / } split /\n/, $log;
}

sub tally {
	my (@d) = @_;
	my %n;
	$n{$_->[0]}++ for @d;
	return \%n;
}

sub show { my ($n) = @_; return join(', ', map { "$_: $n->{$_}" } sort keys %$n) || 'nothing'; }

sub master_pid {
	open my $fh, '<', "$d/nginx.pid" or return 0;
	my $pid = <$fh> // '';
	$pid =~ s/\s+//g;
	return $pid;
}

# the live (not zombie) children of the master
sub workers_of {
	my ($master) = @_;
	my @w;
	for my $stat (glob '/proc/[0-9]*/stat') {
		open my $fh, '<', $stat or next;
		my $line = <$fh> // '';
		push @w, $1 if $line =~ /^(\d+) \(.*\) ([A-Z]) (\d+) / && $3 == $master && $2 ne 'Z';
	}
	return sort { $a <=> $b } @w;
}

# waits for two workers, none of them in @old
sub new_workers {
	my ($master, @old) = @_;
	my %old = map { $_ => 1 } @old;
	return wait_for(15, sub {
		my @w = workers_of($master);
		@w == 2 && !grep({ $old{$_} } @w) ? [@w] : undef;
	});
}

###############################################################################

# 1. A changed password is refused as soon as the store shows the new one, whatever the cache
# holds. The old password is logged in (and cached) first; the store is changed with the real
# tools; each worker re-checks a passwd file at most once a second, so 2.5 s after the change
# every worker has seen it (SQLite is read at every lookup).

my $master = master_pid();
my @workers = workers_of($master);
is(scalar @workers, 2, 'two workers running');

my %p1ip = (reload1 => '192.0.2.11', kill1 => '192.0.2.12', noop2 => '192.0.2.13',
	reload2 => '192.0.2.14', kill2 => '192.0.2.15');
my %p1uri = (reload1 => '/p1file', kill1 => '/p1file', noop2 => '/p1sql', reload2 => '/p1sql',
	kill2 => '/p1sql');

# logs the old password in twice (the second answer from the cache); true if both OK and cached
sub cache_old {
	my ($user) = @_;
	my $from = log_size();
	my @s = map { status($p1uri{$user}, $user, "old-$user", $p1ip{$user}) } 1 .. 2;
	my @cached = grep { $_->[2] =~ /result=ok .*cached verdict/ } decisions($from, $p1ip{$user});
	return (!grep({ $_ ne 'OK' } @s) && @cached >= 1);
}

# $n tries of the old password and 2 of the new one: (old accepted, new accepted, answers)
sub after_change {
	my ($user, $n) = @_;
	my @old = map { status($p1uri{$user}, $user, "old-$user", $p1ip{$user}) } 1 .. $n;
	my @new = map { status($p1uri{$user}, $user, "new-$user", $p1ip{$user}) } 1 .. 2;
	my $old_ok = grep { $_ eq 'OK' } @old;
	my $new_ok = grep { $_ eq 'OK' } @new;
	return ($old_ok, $new_ok, 'old: ' . join(', ', @old) . '; new: ' . join(', ', @new));
}

# kill -9 of both workers: the master starts new ones from its own copy of the configuration
my @killed;

sub kill_workers {
	my ($what) = @_;
	my @victims = @workers;
	push @killed, @victims;
	kill 'KILL', @victims;
	my $new = new_workers($master, @victims);
	ok($new, "kill -9 ($what): the master started two new workers");
	@workers = @{$new // [workers_of($master)]};
	my $log = $t->read_file('error.log');
	is(scalar(grep { $log =~ /worker process $_ exited on signal 9/ } @victims), 2,
		"kill -9 ($what): the master logged both killed workers");
}

SKIP: {
	skip 'reload, kill -9 and 1 s store checks: not under valgrind', 22 if $VALGRIND;

	ok(cache_old('reload1') && cache_old('reload2') && cache_old('noop2'),
		'old passwords logged in and cached (passwd file, SQLite)');

	# SQLite, no operator action: the tool changes the row, the next lookups must see it
	{
		usertool("$d/p1.db", 'passwd', 'noop2', '--password', 'new-noop2', '--cost', '5');
		my $from = log_size();
		my ($old_ok, $new_ok, $all) = after_change('noop2', 20);
		my %pids = map { $_->[1] => 1 } decisions($from, $p1ip{noop2});
		is($old_ok, 0, "sqlite, no action: old password accepted $old_ok/20 times after the change")
			or diag($all);
		is($new_ok, 2, 'sqlite, no action: new password accepted') or diag($all);
		is(scalar keys %pids, 2, 'sqlite, no action: both workers answered (' . join(', ', sort keys %pids) . ')');
	}

	# nginx -s reload
	{
		htpasswd('-bB', '-C', '5', "$d/p1users", 'reload1', 'new-reload1');
		usertool("$d/p1.db", 'passwd', 'reload2', '--password', 'new-reload2', '--cost', '5');
		sleep 2.5;
		my ($rc, $out) = run_tool($Test::Nginx::NGINX, '-p', "$d/", '-c', 'nginx.conf',
			'-e', 'error.log', '-s', 'reload');
		my $new = $rc == 0 ? new_workers($master, @workers) : undef;
		ok($new, 'nginx -s reload: new workers') or diag($out);
		@workers = @{$new // [workers_of($master)]};

		my ($old_ok, $new_ok, $all) = after_change('reload1', 6);
		is($old_ok, 0, "passwd file, reload: old password accepted $old_ok/6 times") or diag($all);
		is($new_ok, 2, 'passwd file, reload: new password accepted') or diag($all);
		($old_ok, $new_ok, $all) = after_change('reload2', 6);
		is($old_ok, 0, "sqlite, reload: old password accepted $old_ok/6 times") or diag($all);
		is($new_ok, 2, 'sqlite, reload: new password accepted') or diag($all);
	}

	# kill -9, first with no store change since the reload: the passwords changed before it
	{
		kill_workers('after the reload');
		my ($old_ok, $new_ok, $all) = after_change('reload1', 6);
		is($old_ok, 0, "passwd file, reload then kill -9: old password accepted $old_ok/6 times") or diag($all);
		is($new_ok, 2, 'passwd file, reload then kill -9: new password accepted') or diag($all);
		($old_ok, $new_ok, $all) = after_change('reload2', 6);
		is($old_ok, 0, "sqlite, reload then kill -9: old password accepted $old_ok/6 times") or diag($all);
		is($new_ok, 2, 'sqlite, reload then kill -9: new password accepted') or diag($all);
	}

	# then passwords cached and changed since the last start of the workers
	{
		ok(cache_old('kill1') && cache_old('kill2'), 'old passwords logged in and cached before kill -9');
		htpasswd('-bB', '-C', '5', "$d/p1users", 'kill1', 'new-kill1');
		usertool("$d/p1.db", 'passwd', 'kill2', '--password', 'new-kill2', '--cost', '5');
		sleep 2.5;
		kill_workers('after a change');
		my ($old_ok, $new_ok, $all) = after_change('kill1', 6);
		is($old_ok, 0, "passwd file, change then kill -9: old password accepted $old_ok/6 times") or diag($all);
		is($new_ok, 2, 'passwd file, change then kill -9: new password accepted') or diag($all);
		($old_ok, $new_ok, $all) = after_change('kill2', 6);
		is($old_ok, 0, "sqlite, change then kill -9: old password accepted $old_ok/6 times") or diag($all);
		is($new_ok, 2, 'sqlite, change then kill -9: new password accepted') or diag($all);
	}
}
note(sprintf('1: %.1f s', time() - $t_start));

###############################################################################

# 2. mail_auth_limit ip=5/m bounds the verifications of a burst: all requests are connected,
# then all are sent before the first answer is read. At most 5 are verified (result=invalid),
# the others refused without a check (result=rate-limited), every answer a failed login.

# connects all, sends all, reads all; returns the Auth-Status of each
sub burst {
	my (@req) = @_;
	my @s = map {
		IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080), Timeout => 5)
	} @req;
	for my $i (0 .. $#req) {
		$s[$i]->syswrite($req[$i]) if $s[$i];
	}
	my @st;
	my $deadline = time() + 60;
	for my $s (@s) {
		my $r = '';
		if ($s) {
			eval {
				local $SIG{ALRM} = sub { die "timeout\n" };
				alarm(int($deadline - time()) + 1);
				while ($s->sysread(my $buf, 4096)) { $r .= $buf; }
				alarm(0);
			};
			alarm(0);
			close $s;
		}
		push @st, $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
	}
	return @st;
}

sub auth_req {
	my ($uri, $user, $pass, $ip) = @_;
	return "GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: $user\r\n"
		. "Auth-Pass: $pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
		. "Client-IP: $ip\r\n\r\n";
}

SKIP: {
	skip 'concurrent bcrypt bursts: not under valgrind', 7 if $VALGRIND;

	for my $case (['/p2file', 'passwd file bcrypt(10)', '192.0.2.21'],
		['/p2sql', 'sqlite bcrypt(10)', '192.0.2.22'])
	{
		my ($uri, $name, $ip) = @$case;
		my $from = log_size();
		my $t0 = time();
		my @st = burst(map { auth_req($uri, 'alice', "wrong-$_", $ip) } 1 .. 60);
		my $took = time() - $t0;
		my @dec = decisions($from, $ip);
		my $n = tally(@dec);
		my $inv = $n->{invalid} // 0;
		my $lim = $n->{'rate-limited'} // 0;
		ok($inv <= 5 && $inv + $lim == 60,
			sprintf('%s, 60 concurrent failures: %d verified (invalid), %d rate-limited, at most 5 verified (%.1f s)',
				$name, $inv, $lim, $took)) or diag(show($n));
		is(scalar(grep { $_ eq $INVALID } @st), 60, "$name: all 60 answered \"$INVALID\"")
			or diag(show(tally(map { [$_] } @st)));
	}

	# 40 concurrent IMAP LOGINs through the mail proxy (client 127.0.0.1). A rate-limited answer
	# carries a growing Auth-Wait that nginx sleeps before answering the client: the clients wait
	# 3 s at most, the decisions are counted in the log.
	SKIP: {
		skip 'python3 with imaplib not installed', 3 unless $PYTHON;

		my $from = log_size();
		my $t0 = time();
		my $pid = open my $burst, '-|', 'python3', "$FindBin::Bin/lib/imap_burst.py",
			'127.0.0.1', port(8143), 40, 'bert', 'wrong-', 3;
		die "imap_burst.py: $!\n" unless $pid;
		my $connected = <$burst> // '';
		my $result = join '', <$burst>;
		close $burst;
		note("imap burst: $connected$result");
		my @dec;
		wait_for(15, sub { @dec = decisions($from, '127.0.0.1'); @dec >= 40 });
		my $n = tally(grep { $_->[2] =~ /user="bert"/ } @dec);
		my $inv = $n->{invalid} // 0;
		my $lim = $n->{'rate-limited'} // 0;
		is($connected, "connected 40\n", 'imap: 40 clients connected');
		ok($inv <= 5 && $inv + $lim == 40,
			sprintf('imap, 40 concurrent LOGINs: %d verified (invalid), %d rate-limited, at most 5 verified (%.1f s)',
				$inv, $lim, time() - $t0)) or diag(show($n));
		like($result, qr/"ok": 0,/, 'imap: no wrong password logged in') or diag($result);

		# Sessions refused with a long Auth-Wait stay in nginx's (non-cancelable) sleep timer up to
		# 60 s after their clients left, and a gracefully stopping worker waits for them: let both
		# workers exit at once (TERM: exit code 0, no alert) and the master start new ones.
		my @old = @workers;
		kill 'TERM', @old;
		my $new = new_workers($master, @old);
		@workers = @{$new // [workers_of($master)]};
	}
}
note(sprintf('2: %.1f s', time() - $t_start));

###############################################################################

# 6. The Basic bridge fails closed.

# nginx -t on a configuration of its own (its own error log: a failure must not reach the
# running nginx's error.log); returns (exit code, output)
sub nginx_t {
	my ($name, $conf) = @_;
	$t->write_file_expand($name, $conf);
	my $text = $t->read_file($name);
	$text =~ s!^(\s*error_log\s+)\S*error\.log!$1$d/error-t.log!mg;
	$t->write_file($name, $text);
	return run_tool($Test::Nginx::NGINX, '-t', '-p', "$d/", '-c', $name, '-e', 'error-t.log');
}

sub bridge_conf {
	my ($access) = @_;
	return <<"EOF";

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_basic_header on;
            $access
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
        }
    }
}

EOF
}

{
	my ($rc, $out) = nginx_t('bridge-ok.conf',
		bridge_conf("auth_basic \"mail\";\n            auth_basic_user_file $d/p6htpasswd;"));
	is($rc, 0, 'nginx -t: bridge with auth_basic accepted') or diag($out);
	($rc, $out) = nginx_t('bridge-open.conf', bridge_conf(''));
	ok($rc != 0 && $out =~ /\[emerg\].*mail_auth_basic_header/,
		"nginx -t: mail_auth_basic_header without auth_basic/auth_request refused (exit $rc)")
		or diag($out);
	# satisfy any: an allow rule matching nginx mail's own address would let every login in
	($rc, $out) = nginx_t('bridge-any.conf',
		bridge_conf("satisfy any;\n            allow 127.0.0.1;\n            deny all;\n"
			. "            auth_basic \"mail\";\n            auth_basic_user_file $d/p6htpasswd;"));
	ok($rc != 0 && $out =~ /\[emerg\].*satisfy any/,
		"nginx -t: mail_auth_basic_header with satisfy any refused (exit $rc)")
		or diag($out);
}

# a user name with ':' cannot become Basic credentials; the client's own Authorization header
# (valid for another user of the htpasswd file) must not decide the login
{
	my $bob = 'Basic ' . encode_base64('bob:bobpw', '');
	is(status('/p6', 'bob', 'bobpw', '192.0.2.61'), 'OK', 'bridge: bob logs in');
	is(status('/p6', 'bob', 'wrong', '192.0.2.61'), $INVALID, 'bridge: bob with a wrong password refused');
	is(status('/p6', 'al:ice', 'x', '192.0.2.62', Authorization => $bob), $INVALID,
		'bridge: user "al:ice" with a smuggled Authorization (bob) refused');
	is(status('/p6', 'bob:', 'x', '192.0.2.62', Authorization => $bob), $INVALID,
		'bridge: user "bob:" with a smuggled Authorization (bob) refused');
	my @ok = grep { $_->[0] eq 'ok' } decisions(0, '192.0.2.62');
	is(scalar @ok, 0, 'bridge: no OK logged for the smuggled requests');
}
note(sprintf('6: %.1f s', time() - $t_start));

###############################################################################

# 8. The per-user limit counts the account: a case-insensitive query makes alice, Alice, ALICE
# ... one account; user=3/m, a new client address each time. The 3rd failure reaches the limit,
# the 4th and later are refused without a check.

{
	my @spell = qw/ alice Alice ALICE aLice alIce aliCe alicE AlIcE /;
	my $from = log_size();
	my @res;
	for my $i (0 .. $#spell) {
		my $ip = '198.51.100.' . (81 + $i);
		status('/p8', $spell[$i], "wrong-$i", $ip);
		my @d = decisions($from, $ip);
		push @res, @d == 1 ? $d[0][0] : 'lines:' . scalar @d;
	}
	is(join(' ', @res[0 .. 2]), 'invalid invalid invalid', 'per-user limit: failures 1-3 verified');
	is(join(' ', @res[3 .. 7]), join(' ', ('rate-limited') x 5),
		'per-user limit: failures 4-8 (other spellings, other addresses) rate-limited')
		or diag(join ' ', map { "$spell[$_]=$res[$_]" } 0 .. $#spell);
}
note(sprintf('8: %.1f s', time() - $t_start));

###############################################################################

# 9. A live ban survives pressure on the zone: ip=3/m ban=10m; the banned address is refused
# with the right password after many failures from fresh addresses (only in the Client-IP
# header: every request goes to 127.0.0.1).

# $n sequential failed logins, each from its own address; returns (failures answered, seconds)
sub flood {
	my ($uri, $n, $prefix) = @_;
	my $t0 = time();
	my $answered = 0;
	for my $i (1 .. $n) {
		my $ip = sprintf('%s.%d.%d', $prefix, ($i >> 8) & 255, $i & 255);
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or next;
		$s->syswrite(auth_req($uri, 'victim', "guess-$i", $ip));
		my $r = '';
		while ($s->sysread(my $buf, 4096)) { $r .= $buf; }
		close $s;
		$answered++ if $r =~ /^Auth-Status: \Q$INVALID\E\r$/m;
	}
	return ($answered, time() - $t0);
}

sub ban {
	my ($uri, $ip) = @_;
	status($uri, 'victim', "ban-$_", $ip) for 1 .. 3;
	my $from = log_size();
	my $s = status($uri, 'victim', 'victim-pw', $ip);
	my @d = decisions($from, $ip);
	return $s eq $INVALID && @d == 1 && $d[0][0] eq 'rate-limited';
}

sub still_banned {
	my ($uri, $ip) = @_;
	my $from = log_size();
	my $s = status($uri, 'victim', 'victim-pw', $ip);
	my @d = decisions($from, $ip);
	return ($s, @d ? $d[0][0] : 'no line');
}

SKIP: {
	skip 'floods of thousands of requests: not under valgrind', 9 if $VALGRIND;

	is(status('/p9', 'victim', 'victim-pw', '127.0.0.8'), 'OK', 'ban: the right password logs in');
	ok(ban('/p9', '127.0.0.9'), 'ban (32k zone): 127.0.0.9 banned after 3 failures');
	{
		# the zone's LRU clock counts seconds: let the ban be strictly the oldest entry
		sleep 1.1;
		my ($answered, $took) = flood('/p9', 400, '10.9');
		is($answered, 400, sprintf('ban (32k zone): 400 failures from 400 fresh addresses (%.1f s)', $took));
		my ($s, $res) = still_banned('/p9', '127.0.0.9');
		ok($s eq $INVALID && $res eq 'rate-limited',
			"ban (32k zone): 127.0.0.9 still refused with the right password ($s, $res)");
	}

	# A 1m zone holds about 17,500 entries and each failure from a new address takes two (the
	# address, the password fingerprint): 6000 failures leave it a third empty, 20000 overfill it
	# (about 2 s here).
	my $FLOOD = 20000;
	ok(ban('/p9big', '127.0.0.10'), 'ban (1m zone): 127.0.0.10 banned after 3 failures');
	{
		sleep 1.1;
		my ($answered, $took) = flood('/p9big', $FLOOD, '10.10');
		is($answered, $FLOOD, sprintf('ban (1m zone): %d failures from fresh addresses (%.1f s)', $FLOOD, $took));
		my ($s, $res) = still_banned('/p9big', '127.0.0.10');
		ok($s eq $INVALID && $res eq 'rate-limited',
			"ban (1m zone): 127.0.0.10 still refused with the right password after $FLOOD ($s, $res)");
	}

	# a zone that holds nothing but live bans: a ban goes, logged and counted
	for my $i (1 .. 600) {
		my $ip = sprintf('10.11.%d.%d', ($i >> 8) & 255, $i & 255);
		status('/p9tiny', 'victim', "tiny-guess-$_", $ip) for 1 .. 2;
	}
	like($t->read_file('error.log'),
		qr/\[warn\].*the mail_auth_limit zone is full of live bans: one was dropped to count this attempt/,
		'ban (zone of bans only): dropping a live ban is logged');
	my $m = http_get('/p9tiny-metrics') // '';
	ok($m =~ /^mail_auth_limiter_bans_evicted_total (\d+)$/m && $1 > 0,
		'ban (zone of bans only): ... and counted (mail_auth_limiter_bans_evicted_total '
		. ($1 // 'absent') . ')') or diag($m);
}
note(sprintf('9: %.1f s', time() - $t_start));

###############################################################################

# 10. Zone names are unambiguous.

sub zone_conf {
	my ($zones) = @_;
	return <<"EOF";

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    $zones

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file $d/p9users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
        }

        location = /metrics {
            mail_auth_status;
        }
    }
}

EOF
}

{
	my ($rc, $out) = nginx_t('zones-ok.conf',
		zone_conf("mail_auth_cache zone=creds:64k;\n    mail_auth_limit zone=brute:64k ip=5/m;"));
	is($rc, 0, 'nginx -t: distinct cache and limiter zones accepted') or diag($out);
	($rc, $out) = nginx_t('zones-status.conf', zone_conf('mail_auth_cache zone=mail_auth_status:64k;'));
	ok($rc != 0 && $out =~ /\[emerg\].*mail_auth_status/,
		"nginx -t: a cache zone named mail_auth_status refused (exit $rc)") or diag($out);
	($rc, $out) = nginx_t('zones-status-limit.conf',
		zone_conf('mail_auth_limit zone=mail_auth_status:64k ip=5/m;'));
	ok($rc != 0 && $out =~ /\[emerg\].*mail_auth_status/,
		"nginx -t: a limiter zone named mail_auth_status refused (exit $rc)") or diag($out);
	($rc, $out) = nginx_t('zones-same.conf',
		zone_conf("mail_auth_cache zone=shared:64k;\n    mail_auth_limit zone=shared:64k ip=5/m;"));
	ok($rc != 0 && $out =~ /\[emerg\].*shared/,
		"nginx -t: one zone name for mail_auth_cache and mail_auth_limit refused (exit $rc)") or diag($out);
}
note(sprintf('10: %.1f s', time() - $t_start));

###############################################################################

# 12. An account's own Auth-Wait does not tell a guesser that it exists: without the right
# password, the answer (Auth-Wait included) is an unknown user's; the account's wait once the
# password is right (a disabled account here)

sub auth_wait {
	my ($user, $pass) = @_;
	my $r = auth_http('/p12', 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => $pass,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.12') // '';
	my ($st) = $r =~ /^Auth-Status: (.*?)\r$/m;
	my ($w) = $r =~ /^Auth-Wait: (.*?)\r$/m;
	return ($st // 'none') . ' / ' . ($w // 'no wait');
}
is(auth_wait('waits', 'guess'), auth_wait('nobody12', 'guess'),
	'own wait: a wrong password of an account with wait=30 answers as an unknown user');
is(auth_wait('waitsoff', 'guess'), auth_wait('nobody12', 'guess'),
	'own wait: ... a disabled one too');
like(auth_wait('waitsoff', 'off-pw'), qr/ \/ 30$/, 'own wait: the right password of the disabled account gets wait=30');

###############################################################################

# the workers killed in 1 are expected alerts of the master ("exited on signal 9"); any other
# alert still fails the harness's check
$t->stop();
{
	my $log = $t->read_file('error.log');
	for my $pid (@killed) {
		$log =~ s/^.*\[alert\] \d+#\d+: worker process $pid exited on signal 9\n//mg;
	}
	$t->write_file('error.log', $log);
}

# the helpers above refer to $t: let the harness's final checks (no alerts) run now, before
# Test::More counts the tests at exit
undef $t;

###############################################################################
