#!/usr/bin/perl

# Attack tests for ngx-mail-auth: what an unauthenticated client can learn from timing, and what
# it can make a worker spend.
#
#   3. No user enumeration by timing, in any store: latency samples of unknown users and of
#      known users with a wrong password (auth_http requests, a new connection each, the
#      classes interleaved) must not be told apart: medians within 25% of the larger one (at
#      least 3 ms apart allowed) and overlapping interquartile ranges.
#      (a) a mixed passwd-file (bcrypt cost 10 by htpasswd, {SSHA} by doveadm, sha512-crypt by
#          openssl): unknown users right after a known {SSHA} login and right after a known
#          bcrypt login, against a wrong password for EACH of the three schemes (so every
#          failed check must cost the same, whatever the scheme);
#      (b) an {SSHA}-only store right after start and right after a reload: the first unknown
#          users (before any known one) and then interleaved ones;
#      (c) an account whose stored password can't be used ({PBKDF2}, a NULL password in
#          SQLite) against a wrong password of a normal account in a bcrypt store;
#      (e) SQLite with the admin tool's schema changed in place (a bcrypt(11) user added to
#          {SSHA512} ones, no reload): unknown users against that user's wrong password;
#      (d) through nginx's IMAP proxy (imaplib, mail_auth_fail_wait 1s): unknown against
#          known-wrong, compared on the time beyond the configured 1 s Auth-Wait.
#   4. Memory stays bounded under unauthenticated load: a store of doveadm's default
#      {ARGON2ID} (64 MiB, t=3), 64 concurrent logins of unknown users: each worker's peak
#      (VmHWM) below (N+2) * 64 MiB + 64 MiB, N the verification concurrency
#      ("mail_auth_verify_concurrency N [queue=M]", default: the number of CPUs - 1, at least 1); with N=1
#      queue=4 the excess is answered "Temporary server problem" (logged result=overloaded),
#      never OK. The default part runs on its own nginx, so it runs even where the directive
#      is unknown (the directive part then fails to start, which is reported as a failure).
#   5. Re-reading a big passwd-file (1,000,000 users) never stalls the event loop: while the
#      worker picks up an atomically replaced file, cheap requests sent at 20/s for 5 s are
#      each answered within 100 ms, and the changed password works within 10 s.
#
# Timing test: skipped under valgrind. Four nginx instances, one after another.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use IO::Select;
use List::Util qw/ max sum /;
use Time::HiRes qw/ time sleep /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;
use MailAuthAttack;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

plan(skip_all => 'timing and memory test: not under valgrind') if $ENV{TEST_NGINX_VALGRIND};

my $t = Test::Nginx->new()->has(qw/http mail imap/);
workers_can_read($t);
plan(skip_all => 'htpasswd, openssl, doveadm or sqlite3 not installed')
	unless have_tool('htpasswd') && have_tool('openssl') && have_tool('doveadm')
	&& have_tool('sqlite3');
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'needs Linux /proc') unless -e '/proc/self/status';
plan(skip_all => 'python3 with imaplib not installed')
	unless system('python3 -c "import imaplib" 2>/dev/null') == 0;

# 3: 4 (b) + 7 (a) + 2 (c) + 1 (f) + 2 (e) + 3 (d); 4: 5 default + 6 with the directive; 5: 4;
# each of the 4 nginx instances adds the harness's 2 checks (alerts, sanitizer)
plan(tests => 19 + 11 + 4 + 2 * 4);

my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';
my $TEMP = '[UNAVAILABLE] Temporary server problem, try again later';
my $MiB = 1024;    # kB

sub status_of {
	my ($answer) = @_;
	return $answer =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

sub hash_cmd {
	my (@cmd) = @_;
	my ($rc, $out) = run_tool(@cmd);
	die "@cmd failed: $out\n" if $rc;
	$out =~ s/\s+\z//;
	$out =~ s/^u://;
	return $out;
}

###############################################################################
# 3. Timing

my $d = $t->testdir();
my %pw = (bc => 'bc-secret', ss => 'ss-secret', s6 => 's6-secret');
my $bcrypt = hash_cmd('htpasswd', '-nbB', '-C', '10', 'u', $pw{bc});
my $ssha = make_hash('doveadm-SSHA', $pw{ss}) // die "doveadm failed\n";
my $sha512 = hash_cmd('openssl', 'passwd', '-6', $pw{s6});

$t->write_file('mixed', "bc:$bcrypt\nss:$ssha\ns6:$sha512\n");
$t->write_file('ssha', join('', map { "ss$_:" . make_hash('doveadm-SSHA', "pw$_") . "\n" } 1 .. 3));
$t->write_file('broken', "alice:$bcrypt\nbroken:{PBKDF2}xyz\n");
# (f): bcrypt(10) users beside one bcrypt(11) user (a cost raised for new passwords)
$t->write_file('costs', "hi:" . hash_cmd('htpasswd', '-nbB', '-C', '11', 'u', 'hi-secret') . "\nlo:$bcrypt\n");
# (e): the admin tool's schema (the default query), {SSHA512} users only to begin with
my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";
sub usertool {
	my ($rc, $out) = run_tool($tool, '--sqlite', "$d/default.db", @_);
	die "mail-auth-user @_: $out" if $rc != 0;
}
usertool('init');
# (the tool makes a new database 0640; the workers may not run as its owner)
chmod 0644, "$d/default.db" or die "chmod: $!\n";
usertool('add', "cheap$_", '--scheme', 'ssha512', '--password', "cheap-pw-$_") for 1 .. 3;

open my $sq, '|-', 'sqlite3', "$d/users.db" or die "sqlite3: $!\n";
print $sq "CREATE TABLE accounts (name TEXT PRIMARY KEY, password TEXT);\n"
	. "INSERT INTO accounts VALUES ('alice', '$bcrypt');\n"
	. "INSERT INTO accounts VALUES ('nullpw', NULL);\n";
close $sq or die "sqlite3 failed\n";
chmod 0644, "$d/users.db";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:8144;
    mail_auth_fail_wait 1s;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /mixed {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/mixed;
        }

        location = /ssha {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/ssha;
        }

        location = /broken {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/broken;
        }

        location = /costs {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/costs;
        }

        location = /sqlite {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/users.db;
            mail_auth_sqlite_query "SELECT password FROM accounts WHERE name = :user";
        }

        location = /sqlite-default {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/default.db;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/mixed;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run();
my $port = port(8080);
$t->waitforsocket("127.0.0.1:$port");

# one timed login; (Auth-Status, seconds)
sub try_login {
	my ($uri, $user, $pass) = @_;
	my ($answer, $dt) = timed_auth($port, $uri, 'Auth-User' => $user, 'Auth-Pass' => $pass);
	return (status_of($answer), $dt);
}

# (b) an {SSHA}-only store right after start / reload: first the unknown users alone, then
# unknown and known-wrong interleaved
sub fresh_ssha_store {
	my ($when) = @_;
	my (@first, @unknown, @known, @bad);
	for my $i (1 .. 6) {
		my ($st, $dt) = try_login('/ssha', "nobody-$when-$i", 'guess');
		push @first, $dt;
		push @bad, "unknown: $st" if $st ne $INVALID;
	}
	for my $i (1 .. 20) {
		my ($st, $dt) = try_login('/ssha', "nobody-$when-x$i", 'guess');
		push @unknown, $dt;
		push @bad, "unknown: $st" if $st ne $INVALID;
		($st, $dt) = try_login('/ssha', 'ss' . (1 + $i % 3), 'wrong');
		push @known, $dt;
		push @bad, "known: $st" if $st ne $INVALID;
	}
	diag("{SSHA} store $when: unexpected answers: @bad") if @bad;
	same_timing("{SSHA} store right after $when: the first unknown users answer as fast as a wrong password",
		\@first, \@known, a => 'first unknown', b => 'known-wrong');
	same_timing("{SSHA} store right after $when: unknown users and wrong passwords interleaved",
		\@unknown, \@known, a => 'unknown', b => 'known-wrong');
}

fresh_ssha_store('start');

# reload: new workers, nothing looked up yet
my $master = master_pid($t);
my @old = worker_pids($master);
$t->reload();
my $reloaded = wait_for(20, sub {
	my @now = worker_pids($master);
	my %old = map { $_ => 1 } @old;
	return @now >= 2 && !grep { $old{$_} } @now;
});
diag('reload: new workers did not appear') unless $reloaded;
fresh_ssha_store('reload');

# (a) the mixed store: 40 rounds of
#     bcrypt wrong, {SSHA} right, unknown, sha512-crypt wrong, bcrypt right, unknown, {SSHA} wrong
my %lat = map { $_ => [] } qw/ bc ss s6 u_after_ss u_after_bc /;
my @bad;
for my $i (1 .. 40) {
	my @round = (
		[bc => 'bc', 'wrong', $INVALID], [undef, 'ss', $pw{ss}, 'OK'],
		[u_after_ss => "nobody$i", 'wrong', $INVALID], [s6 => 's6', 'wrong', $INVALID],
		[undef, 'bc', $pw{bc}, 'OK'], [u_after_bc => "nobody$i-b", 'wrong', $INVALID],
		[ss => 'ss', 'wrong', $INVALID],
	);
	for my $r (@round) {
		my ($class, $user, $pass, $want) = @$r;
		my ($st, $dt) = try_login('/mixed', $user, $pass);
		push @bad, "$user: $st" if $st ne $want;
		push @{$lat{$class}}, $dt if defined $class;
	}
}
ok(!@bad, 'mixed store: wrong passwords and unknown users refused alike, right ones OK')
	or diag("@bad");
for my $u (qw/ u_after_ss u_after_bc /) {
	my $after = $u eq 'u_after_ss' ? 'a known {SSHA} login' : 'a known bcrypt login';
	for my $k ([bc => 'bcrypt'], [ss => '{SSHA}'], [s6 => 'sha512-crypt']) {
		same_timing("mixed store: unknown user right after $after vs a wrong $k->[1] password",
			$lat{$u}, $lat{$k->[0]}, a => "unknown after $after", b => "$k->[1] wrong");
	}
}

# (c) an account with an unusable stored password vs a wrong password in a bcrypt store
my (@broken, @normal, @nullpw, @sqlnormal);
for (1 .. 30) {
	push @broken, (try_login('/broken', 'broken', 'guess'))[1];
	push @normal, (try_login('/broken', 'alice', 'wrong'))[1];
	push @nullpw, (try_login('/sqlite', 'nullpw', 'guess'))[1];
	push @sqlnormal, (try_login('/sqlite', 'alice', 'wrong'))[1];
}
same_timing('bcrypt passwd-file: an account with {PBKDF2}xyz answers as slowly as a wrong password',
	\@broken, \@normal, a => '{PBKDF2} account', b => 'bcrypt wrong');
same_timing('bcrypt SQLite store: an account with a NULL password answers as slowly as a wrong password',
	\@nullpw, \@sqlnormal, a => 'NULL password', b => 'bcrypt wrong');

# (f) bcrypt(10) beside a bcrypt(11) template: a wrong bcrypt(10) password is topped up to the
# template's cost, not padded with a whole bcrypt(11) on top of its own (~168 ms against ~112)
my (@costunknown, @costlo);
for my $i (1 .. 16) {
	push @costunknown, (try_login('/costs', "nobody-cost$i", 'wrong'))[1];
	push @costlo, (try_login('/costs', 'lo', "wrong-$i"))[1];
}
same_timing('bcrypt(10) account beside a bcrypt(11) one: a wrong password costs what an unknown user costs',
	\@costunknown, \@costlo, a => 'unknown', b => 'bcrypt(10) wrong');

# (e) SQLite with the admin tool's schema, changed in place while nginx runs: its timing
# template is the costliest stored hash, looked for again when the file changes. The workers
# have seen only {SSHA512} users; a bcrypt(11) user is added (no reload), then unknown users must
# cost what that user's wrong password costs (neither the old cheap template nor the default
# bcrypt(10) padding of a store whose template is unknown)
try_login('/sqlite-default', "cheap$_", 'wrong') for 1 .. 4;
usertool('add', 'dear', '--cost', '11', '--password', 'dear-pw');
sleep 1.5;
my (@sqlunknown, @sqldear, @sqlbad);
for my $i (1 .. 12) {
	my ($st, $dt) = try_login('/sqlite-default', "nobody-sql$i", 'wrong');
	push @sqlunknown, $dt;
	push @sqlbad, "unknown: $st" if $st ne $INVALID;
	($st, $dt) = try_login('/sqlite-default', 'dear', "wrong-$i");
	push @sqldear, $dt;
	push @sqlbad, "dear: $st" if $st ne $INVALID;
}
ok(!@sqlbad, 'SQLite, the tool\'s schema: unknown users and a wrong password refused alike') or diag("@sqlbad");
same_timing('SQLite, the tool\'s schema changed in place: unknown users cost what the new bcrypt(11) user costs',
	\@sqlunknown, \@sqldear, a => 'unknown', b => 'bcrypt(11) wrong');

# (d) through the IMAP proxy: nginx delays every refusal by Auth-Wait (1 s); what is left
# must not tell unknown users from known ones
my @jobs;
for my $i (1 .. 16) {
	push @jobs, "unknown:nobody-imap$i:wrong", "bc:bc:wrong-$i", "ss:ss:wrong-$i";
}
open my $py, '-|', 'python3', "$FindBin::Bin/lib/imap_timing.py", '127.0.0.1', port(8143), 4, @jobs
	or die "python3: $!\n";
my %imap = map { $_ => [] } qw/ unknown bc ss /;
my @verdicts;
while (my $l = <$py>) {
	my ($label, $secs, $verdict) = split ' ', $l;
	next unless defined $verdict && $imap{$label};
	push @{$imap{$label}}, $secs - 1.0;
	push @verdicts, $verdict;
}
close $py;
ok(@verdicts == @jobs && !grep({ $_ ne 'no' } @verdicts), 'imap: every login refused')
	or diag("verdicts: @verdicts");
note(sprintf('imap login time medians: unknown %s, bcrypt wrong %s, {SSHA} wrong %s (Auth-Wait 1 s included)',
	map { ms(1.0 + (quartiles(@{$imap{$_}}))[0]) } qw/ unknown bc ss /));
same_timing('imap proxy: unknown user vs wrong bcrypt password (time beyond the 1 s Auth-Wait)',
	$imap{unknown}, $imap{bc}, floor => 0.010, a => 'unknown', b => 'bcrypt wrong');
same_timing('imap proxy: unknown user vs wrong {SSHA} password (time beyond the 1 s Auth-Wait)',
	$imap{unknown}, $imap{ss}, floor => 0.010, a => 'unknown', b => '{SSHA} wrong');

undef $t;    # stops nginx; the harness's checks for this instance

###############################################################################
# 4. Memory under unauthenticated load: doveadm's default {ARGON2ID} (m=65536 KiB, t=3)

my $cpus = `nproc 2>/dev/null` || 2;
$cpus =~ s/\s+//g;
$cpus = 2 unless $cpus =~ /^\d+$/ && $cpus > 0;
my $default_n = $cpus > 1 ? $cpus - 1 : 1;

# $port_num: the number as written in the config (the harness maps it to a free port)
sub argon_nginx {
	my ($port_num, $extra) = @_;
	my $t = Test::Nginx->new();
	workers_can_read($t);
	$t->write_file('argon', join('', map {
		"user$_:" . (make_hash('doveadm-ARGON2ID', "argon-pw$_") // die "doveadm failed\n") . "\n"
	} 1 .. 3));
	$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    $extra

    server {
        listen       127.0.0.1:$port_num reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/argon;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0s;
        }
    }
}

EOF
	return $t;
}

# Known users with a wrong password first, until both workers have answered one (a worker
# that has seen the store's {ARGON2ID} then makes unknown users cost the same), then 64
# unknown users at once. Returns (answers, peak VmHWM kB, peak VmRSS seen kB, VmRSS after kB,
# per-worker text).
sub argon_attack {
	my ($t, $port) = @_;
	my $master = master_pid($t);
	wait_for(10, sub { worker_pids($master) >= 2 });
	my @workers = worker_pids($master);
	for my $i (1 .. 16) {
		timed_auth($port, '/auth', 'Auth-User' => 'user' . (1 + $i % 3), 'Auth-Pass' => "wrong$i",
			timeout => 60);
		my %seen = map { /\[\w+\] (\d+)#/ ? ($1 => 1) : () }
			grep { /mail_auth: user="user\d"/ } split /\n/, $t->read_file('error.log');
		last if @workers == grep { $seen{$_} } @workers;
	}
	my %rss_peak;
	my $sample = sub {
		for my $w (@workers) {
			my $rss = proc_kb($w, 'VmRSS');
			$rss_peak{$w} = $rss if $rss > ($rss_peak{$w} // 0);
		}
	};
	my @answers = parallel_auth($port, '/auth', 120,
		(map { { 'Auth-User' => "unknown$_", 'Auth-Pass' => "guess$_" } } 1 .. 64), $sample);
	$sample->();
	my %hwm = map { $_ => proc_kb($_, 'VmHWM') } @workers;
	my %after = map { $_ => proc_kb($_, 'VmRSS') } @workers;
	my $text = join(', ', map { sprintf('worker %d: VmHWM %.0f MiB, VmRSS peak seen %.0f MiB, after %.0f MiB',
		$_, $hwm{$_} / $MiB, ($rss_peak{$_} // 0) / $MiB, $after{$_} / $MiB) } @workers);
	return ([map { status_of($_->[0]) } @answers], max(values %hwm) // 0,
		max(values %rss_peak) // 0, max(values %after) // 0, $text);
}

# default configuration: N = the number of CPUs - 1 (at least 1)
$t = argon_nginx(8081, '');
$t->run();
$t->waitforsocket('127.0.0.1:' . port(8081));
my ($answers, $hwm, $rss, $after, $text) = argon_attack($t, port(8081));
my $bound = (($default_n + 2) * 64 + 64) * $MiB;
diag("64 unknown {ARGON2ID} logins, default config ($cpus CPUs, N=$default_n, bound "
	. $bound / $MiB . " MiB per worker): $text");
ok(!grep({ $_ eq 'OK' } @$answers), 'argon2 default: no unknown user is let in');
ok(!grep({ $_ ne $INVALID && $_ ne $TEMP } @$answers),
	'argon2 default: every answer a refusal or a temporary failure')
	or diag(join ', ', @$answers);
cmp_ok($hwm, '<', $bound, "argon2 default: peak worker memory (VmHWM) below (N+2)*64+64 MiB, N=$default_n");
cmp_ok($rss, '<', $bound, 'argon2 default: worker RSS sampled during the attack below the bound');
cmp_ok($after, '<', $bound, 'argon2 default: worker RSS after the attack below the bound');
undef $t;

# mail_auth_verify_concurrency 1 queue=4: at most 1 running + 4 waiting per worker
$t = argon_nginx(8082, 'mail_auth_verify_concurrency 1 queue=4;');
my $started = do {
	open my $stderr, '>&', \*STDERR or die;    # nginx's own complaint goes to error.log
	open STDERR, '>', '/dev/null';
	my $ok = eval { $t->run(); 1 };
	open STDERR, '>&', $stderr;
	$ok;
};
ok($started, 'nginx starts with "mail_auth_verify_concurrency 1 queue=4"')
	or diag('nginx did not start: ' . join(' | ', $t->read_file('error.log') =~ /(\[emerg\].*)/g));
SKIP: {
	skip 'nginx did not start with the directive', 5 unless $started;
	$t->waitforsocket('127.0.0.1:' . port(8082));
	($answers, $hwm, $rss, $after, $text) = argon_attack($t, port(8082));
	$bound = ((1 + 2) * 64 + 64) * $MiB;
	diag("64 unknown {ARGON2ID} logins, N=1 queue=4 (bound " . $bound / $MiB . " MiB): $text");
	my $temps = grep { $_ eq $TEMP } @$answers;
	my $overloaded = () = $t->read_file('error.log') =~ /mail_auth: user="unknown\d+" .*result=overloaded /g;
	ok(!grep({ $_ eq 'OK' } @$answers) && !grep({ $_ ne $INVALID && $_ ne $TEMP } @$answers),
		'N=1 queue=4: never OK, every answer a refusal or a temporary failure')
		or diag(join ', ', @$answers);
	cmp_ok($temps, '>=', 16, 'N=1 queue=4: the excess is answered with a temporary failure');
	is($overloaded, $temps, 'N=1 queue=4: each temporary failure logged as result=overloaded');
	cmp_ok($hwm, '<', $bound, 'N=1 queue=4: peak worker memory (VmHWM) below 3*64+64 MiB');
	cmp_ok($after, '<', $bound, 'N=1 queue=4: worker RSS after the attack below the bound');
}
# the harness counts [emerg] lines as alerts: the refusal of an unknown directive was reported
# above (a failed test), not twice
$t->write_file('error.log', '') unless $started;
undef $t;

###############################################################################
# 5. A 1,000,000-user passwd-file re-read while cheap requests keep coming.
# worker_processes 1: the one worker answers every request, so a stall of its event loop
# shows in every request made meanwhile (with two workers half of them would escape it).

$t = Test::Nginx->new();
workers_can_read($t);
$d = $t->testdir();
my $probe_hash = hash_cmd('htpasswd', '-nbs', 'u', 'probe-pw');
my $old_hash = hash_cmd('htpasswd', '-nbs', 'u', 'old-pw');
my $new_hash = hash_cmd('htpasswd', '-nbs', 'u', 'new-pw');
my $filler = hash_cmd('htpasswd', '-nbs', 'u', 'filler');

sub big_file {
	my ($path, $victim_hash) = @_;
	open my $fh, '>', $path or die "$path: $!\n";
	print $fh "probe:$probe_hash\n";
	for my $k (0 .. 999) {
		print $fh join('', map { sprintf("user%07d:%s\n", $k * 1000 + $_, $filler) } 0 .. 999);
	}
	print $fh "victim:$victim_hash\n";
	close $fh or die "$path: $!\n";
}

$t->write_file('users', "probe:$probe_hash\n");    # small at start: the big one comes in later
$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8083;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0s;
        }
    }
}

EOF

$t->run();
$port = port(8083);
$t->waitforsocket("127.0.0.1:$port");
$master = master_pid($t);
my ($worker) = worker_pids($master);

# first the big file comes in; its loading is allowed to be slow
big_file("$d/users.big", $old_hash);
rename "$d/users.big", "$d/users" or die "rename: $!\n";
sleep 1.1;
my $loaded = wait_for(60, sub {
	status_of((timed_auth($port, '/auth', 'Auth-User' => 'victim', 'Auth-Pass' => 'old-pw',
		timeout => 60))[0]) eq 'OK' });
diag('the 1,000,000-user file was not picked up within 60 s') unless $loaded;
my $steady = proc_kb($worker, 'VmRSS');

# the copy with one password changed, ready before the clock starts
big_file("$d/users.new", $new_hash);
sleep 1.1;    # the worker looks at the file at most once a second: the next request looks

my $t0 = time();
rename "$d/users.new", "$d/users" or die "rename: $!\n";
my (@lat, @late, %pending, $accepted_at, $rss_peak);
my $sel = IO::Select->new();
my $sent = 0;
while ($sent < 100 or $sel->count()) {
	last if time() - $t0 > 40;
	my $now = time();
	if ($sent < 100 and $now >= $t0 + 0.05 * $sent) {
		# every 4th request: the changed user with the new password, the others the probe
		my $victim = $sent % 4 == 3;
		my $req = auth_request('/auth', 'Auth-User' => $victim ? 'victim' : 'probe',
			'Auth-Pass' => $victim ? 'new-pw' : 'probe-pw');
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp');
		if ($s) {
			$s->syswrite($req);
			$sel->add($s);
			$pending{fileno $s} = { sent => $now, victim => $victim, answer => '' };
		} else {
			push @late, "connect failed at " . ms($now - $t0);
		}
		$sent++;
	}
	my $next = $sent < 100 ? $t0 + 0.05 * $sent - time() : 0.05;
	for my $s ($sel->can_read($next > 0 ? $next : 0)) {
		my $p = $pending{fileno $s};
		my $n = $s->sysread($p->{answer}, 4096, length $p->{answer});
		next if $n;
		my $dt = time() - $p->{sent};
		push @lat, $dt;
		push @late, sprintf('%s at +%s: %s', ms($dt), ms($p->{sent} - $t0), status_of($p->{answer}))
			if $dt > 0.1;
		if ($p->{victim} and status_of($p->{answer}) eq 'OK') {
			$accepted_at //= $p->{sent} - $t0;
		} elsif (!$p->{victim} and status_of($p->{answer}) ne 'OK') {
			push @late, 'probe answered ' . status_of($p->{answer});
		}
		$sel->remove($s);
		delete $pending{fileno $s};
		close $s;
	}
	my $r = proc_kb($worker, 'VmRSS');
	$rss_peak = $r if $r > ($rss_peak // 0);
}
# not picked up during the 5 s: keep asking, up to 10 s after the change
while (!defined $accepted_at and time() - $t0 < 10) {
	my $at = time() - $t0;
	$accepted_at = $at if status_of((timed_auth($port, '/auth', 'Auth-User' => 'victim',
		'Auth-Pass' => 'new-pw', timeout => 10))[0]) eq 'OK';
	sleep 0.2 unless defined $accepted_at;
}
my $hwm_big = proc_kb($worker, 'VmHWM');
my ($m50) = quartiles(@lat);

diag(sprintf('1,000,000-user re-read: %d answers, median %s, max %s, %d over 100 ms; '
	. 'changed password accepted %s after the change; worker VmRSS %.0f MiB before, '
	. 'peak seen %.0f MiB, VmHWM %.0f MiB', scalar @lat, ms($m50), ms(max(@lat) // 0),
	scalar(grep { $_ > 0.1 } @lat), defined $accepted_at ? ms($accepted_at) : 'never',
	$steady / $MiB, ($rss_peak // 0) / $MiB, $hwm_big / $MiB));
ok($loaded, 'the 1,000,000-user file was picked up');
ok(@lat == 100 && !grep({ $_ > 0.1 } @lat) && !grep({ /probe answered/ } @late),
	'every cheap request during the re-read answered (right) within 100 ms')
	or diag(join '; ', @late[0 .. ($#late > 9 ? 9 : $#late)]);
ok(defined $accepted_at && $accepted_at <= 10, 'the changed password is accepted within 10 s');
cmp_ok($hwm_big, '<', 400 * $MiB, 'worker peak memory (VmHWM) with 1,000,000 users below 400 MiB');

undef $t;

###############################################################################
