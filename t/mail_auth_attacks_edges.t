#!/usr/bin/perl

# Tests for ngx-mail-auth: attacks found by reviewing the module as an attacker would.
#   1. Long passwords against crypt(3) hashes. SHA-crypt hashes the password about twice a
#      round (and once more as many times as it has bytes): 4,000 bytes against a default
#      `$6$` hash (made by doveadm) are ~150 ms of SHA-512. A client that sends them must not
#      stall the worker's event loop: as libxcrypt, a password of 512 bytes or more never
#      matches a crypt(3) hash and is not hashed; a shorter one that makes the hash slow goes
#      to the thread pool like a costly hash. A cheap login sent behind a burst of them is
#      answered at once, and a long right password (511 bytes) still logs in.
#   2. A request refused by the location's `deny` is not a failed login: it stays an HTTP 403
#      and counts nothing for the user and client address it names (before, it was turned
#      into a failed login and counted, so whoever the rules refuse could ban any user and any
#      client address).
#   3. An account the store finds under another name (an alias query) has its own budget too:
#      the client its owner logged in from keeps logging in through the alias while others'
#      guesses ban the account (it was refused: the account's budget was asked without the
#      client, so without its trust), and APOP guesses through the alias count on the account
#      (they were never counted there: APOP/CRAM-MD5 checked their response before it).
#   4. A wrong password repeated by one client for one user is counted once (a device retrying
#      a stale password must not ban its user) and checked 3 times at once, then at most once
#      a second: 20 repeats of a bcrypt guess in a loop were 20 bcrypts, uncounted.
#   5. nginx copies a client's reverse-DNS name into Client-Host unchecked (lower-cased): a
#      name with line ends in it adds headers, e.g. "auth-ssl: on" on a cleartext SMTP
#      connection, which passed mail_auth_require_tls. The headers that say what nginx knows
#      of the connection must be spelled as nginx spells them. (Sent here as the auth_http
#      request such a name makes; the resolver side is nginx's and not played here.)
#   6. A passwd-file truncated in place (`cat >`, htpasswd) and caught empty by the watcher:
#      every user was unknown (failed logins, counted) until the rewrite came.
#   7. One stored hash whose parameters ask for hours (bcrypt cost 31, ~33 h) in a store of
#      bcrypt(5) users: it became the store's timing template, so every unknown user's login
#      ran it and held a verification slot for good (the answer never came). Such a value is
#      malformed now (more than 4 s of estimated work): its user cannot log in, unknown users
#      pay the costliest usable hash, the load log says why.
#   8. A locked account (a `!` before its hash) repeated the same guess: every repeat was checked
#      (as a right password refused by policy was), while an unknown user's repeats are refused
#      without a check after the third: the answers told locked accounts from unknown names.
#   9. A right password the account's rules refuse (allow_nets, nologin on POP3) was confirmed
#      to the guesser four ways, though the answer's text is a wrong password's: it got the
#      account's own Auth-Wait (wait=30) instead of the location's; its repeats were checked
#      every time while a wrong guess's are refused without a check; in a store whose timing
#      template is bcrypt, a {PLAIN} account's right password was answered at once while a wrong
#      one is padded to the bcrypt; and its verdict stayed in mail_auth_cache for the ttl while
#      a wrong one's goes after negative_ttl (a repeat 2 s later was a cache hit). Now it gets
#      what a wrong password gets, in all four.

###############################################################################

use warnings;
use strict;

use Test::More;
use Digest::MD5 qw/ md5_hex /;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw/ time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

plan(skip_all => 'timing test: not under valgrind') if $ENV{TEST_NGINX_VALGRIND};

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'doveadm or sqlite3 not installed') unless have_tool('doveadm') && have_tool('sqlite3');

my $long = 'p' x 511;
my %pw = (sha => 'sha pw', md5 => 'md5 pw', plain => 'plain pw', long => $long, alice => 'alice pw');
my %hash = map { $_ => make_hash('doveadm-SHA512-CRYPT', $pw{$_}) } qw/ sha long alice /;
$hash{md5} = make_hash('doveadm-MD5-CRYPT', $pw{md5});
for (keys %hash) {
	# the bare crypt(3) form, as in /etc/shadow or htpasswd files
	$hash{$_} =~ s/^\{[^}]*\}//;
}

$t->write_file('users', join('', map { "$_:$hash{$_}\n" } sort keys %hash) . "plain:{PLAIN}$pw{plain}\n");
# (a store of its own: a bcrypt hash would be the first one's timing template)
my $cost5 = make_hash('htpasswd-B', 'erin pw');
my $cost31 = make_hash('htpasswd-B', 'evil pw');
$cost31 =~ s/^\$2y\$05\$/\$2y\$31\$/ or die "not a bcrypt(5) hash: $cost31\n";
$t->write_file('users-costly', "erin:$cost5\nevil:$cost31\nlocked:!$cost5\n");
$t->write_file('users-bcrypt', 'bert:' . make_hash('doveadm-BLF-CRYPT', 'bert pw') . "\n");
# (9) a bcrypt(10) user makes the store's timing template; the others' rules refuse 203.0.113.x
sub bcrypt10 {
	open my $fh, '-|', 'doveadm', '-o', 'stats_writer_socket_path=', 'pw', '-s', 'BLF-CRYPT', '-r', '10', '-p', $_[0]
		or die "doveadm: $!";
	my $h = <$fh>;
	close $fh;
	$h =~ s/\s+\z//;
	return $h;
}
$t->write_file('users-rules', 'costly:' . bcrypt10('costly pw') . "\n"
	. "netpw:{PLAIN}net pw::::::wait=30 allow_nets=10.0.0.0/8\n"
	. "offpw:{PLAIN}off pw::::::wait=30 nologin\n"
	. 'netcost:' . bcrypt10('netcost pw') . "::::::allow_nets=10.0.0.0/8\n");

# accounts found under an alias too (name@example.org), by sqlite3 on the default schema
my $d = $t->testdir();
system("sqlite3 $d/aliases.db < ../scripts/schema.sql") == 0 or die "sqlite3: $?";
system('sqlite3', "$d/aliases.db", "INSERT INTO users(name, password) VALUES "
	. "('carol', '{PLAIN}carol pw'), ('dave', '{PLAIN}dave pw')") == 0 or die "sqlite3: $?";
chmod 0644, "$d/aliases.db";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # POP3 logins get a small budget of their own (part 2); IMAP's (part 1) is out of the way
    mail_auth_limit zone=brute:1m ip=1000/m user=1000/m pop3:ip=4/m pop3:user=3/m ban=10m;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:8143;
            mail_auth_backend pop3 127.0.0.1:8110;
            mail_auth_fail_wait 0;
        }

        location = /auth-tls {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend smtp 127.0.0.1:8025;
            mail_auth_require_tls smtp;
            mail_auth_fail_wait 0;
        }

        location = /auth-bcrypt {
            mail_auth;
            mail_auth_passwd_file users-bcrypt;
            mail_auth_backend pop3 127.0.0.1:8110;
            mail_auth_fail_wait 0;
        }

        location = /auth-alias {
            mail_auth;
            mail_auth_sqlite aliases.db;
            mail_auth_sqlite_query "SELECT name, password FROM users WHERE name = :user OR name || '@example.org' = :user";
            mail_auth_backend pop3 127.0.0.1:8110;
            mail_auth_fail_wait 0;
        }

        # the location nginx mail would use if it ran on the listed network only
        location = /auth-costly {
            mail_auth;
            mail_auth_passwd_file users-costly;
            mail_auth_backend imap 127.0.0.1:8143;
            mail_auth_fail_wait 0;
        }

        location = /auth-rules {
            mail_auth;
            mail_auth_passwd_file users-rules;
            mail_auth_backend imap 127.0.0.1:8143;
            mail_auth_backend pop3 127.0.0.1:8110;
            mail_auth_fail_wait 2;
            mail_auth_cache zone=rules:1m ttl=1h negative_ttl=1s;
        }

        location = /auth-rules-fresh {
            mail_auth;
            mail_auth_passwd_file users-rules;
            mail_auth_backend imap 127.0.0.1:8143;
        }

        location = /auth-lan {
            allow 192.0.2.0/24;
            deny all;
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend pop3 127.0.0.1:8110;
            mail_auth_fail_wait 0;
        }
    }
}

EOF

$t->run()->plan(41);

###############################################################################

sub request {
	my ($uri, $user, $pass, $ip, $protocol) = @_;
	return "GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
		. "Auth-User: $user\r\nAuth-Pass: $pass\r\nAuth-Protocol: " . ($protocol // 'imap') . "\r\n"
		. "Auth-Login-Attempt: 1\r\nClient-IP: " . ($ip // '127.0.0.1') . "\r\n\r\n";
}

sub login {
	return http(request(@_)) // '';
}

# Sends $n requests for $user with $pass at once (all written before any answer is read),
# then a {PLAIN} login: the seconds that one took, and the answers of all.
sub burst_then_cheap {
	my ($n, $user, $pass) = @_;
	my @s;
	for (1 .. $n) {
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080), Proto => 'tcp')
			or die "connect: $!";
		print $s request('/auth', $user, $pass, "198.51.100.$_");
		push @s, $s;
	}
	my $start = time();
	my $cheap = login('/auth', 'plain', $pw{plain}, '203.0.113.1');
	my $took = time() - $start;
	my @answers = map { local $/; my $s = $_; scalar(<$s>) // '' } @s;
	return ($took, $cheap, @answers);
}

###############################################################################

# 1. long passwords against crypt(3) hashes

like(login('/auth', 'long', $long), qr/^Auth-Status: OK\r$/m,
	'a right password of 511 bytes logs in against its SHA512-CRYPT hash (doveadm)');
like(login('/auth', 'sha', $pw{sha}), qr/^Auth-Status: OK\r$/m, 'a short one too');
like(login('/auth', 'md5', $pw{md5}), qr/^Auth-Status: OK\r$/m, 'and MD5-CRYPT');

my ($idle) = burst_then_cheap(0);

# 4,000 bytes: each was ~150 ms of SHA-512 on the event loop, one after the other
my ($took, $cheap, @answers) = burst_then_cheap(12, 'sha', 'x' x 4000);
like($cheap, qr/^Auth-Status: OK\r$/m, 'a cheap login behind 12 passwords of 4,000 bytes: OK');
cmp_ok($took, '<', 0.5, 'and answered at once (' . sprintf('%.3f s, idle %.3f s', $took, $idle) . ')');
is(scalar(grep { /^Auth-Status: .*Invalid login or password\r$/m } @answers), 12,
	'the 4,000-byte passwords are wrong passwords (as libxcrypt, never a match)');

# unknown users are checked against the store's costliest hash (a SHA512-CRYPT here): the same
($took, $cheap) = burst_then_cheap(12, 'nobody', 'x' x 4000);
cmp_ok($took, '<', 0.5, 'the same for an unknown user (' . sprintf('%.3f s', $took) . ')');

# 511 bytes: the longest a crypt(3) hash takes, ~10 ms each; on the thread pool now
($took, $cheap, @answers) = burst_then_cheap(40, 'sha', 'x' x 511);
cmp_ok($took, '<', 0.3, 'a cheap login behind 40 wrong passwords of 511 bytes answered at once ('
	. sprintf('%.3f s', $took) . ')');
is(scalar(grep { /^Auth-Status: /m } @answers), 40, 'and those 40 were answered');

# 2. a request the location's rules refuse is not a login: not counted, not turned into one

my @refused = map { login('/auth-lan', 'alice', "guess-$_", '127.0.0.9', 'pop3') } 1 .. 6;
is(scalar(grep { m!^HTTP/1\.\d 403 ! && !/^Auth-Status:/m } @refused), 6,
	'a request "deny" refuses stays an HTTP 403 (no auth_http answer)');
like(login('/auth', 'alice', $pw{alice}, '127.0.0.9', 'pop3'), qr/^Auth-Status: OK\r$/m,
	'neither the user nor the client address it named was counted (alice logs in from there)');
ok($t->read_file('error.log') !~ /user="alice" [^\n]*result=(invalid|rate-limited)/,
	'no failed or refused login of alice in the log');

# 3. the account behind an alias (pop3: user=3/m, ip=4/m)

like(login('/auth-alias', 'carol@example.org', 'carol pw', '127.0.0.20', 'pop3'), qr/^Auth-Status: OK\r$/m,
	'carol logs in through her alias from 127.0.0.20');
login('/auth-alias', 'carol', "guess-$_", "127.0.0.2$_", 'pop3') for 1 .. 3;
like(login('/auth-alias', 'carol', 'carol pw', '127.0.0.24', 'pop3'), qr/^Auth-Status: .*Invalid/m,
	'three guesses from elsewhere ban carol');
like(login('/auth-alias', 'carol@example.org', 'carol pw', '127.0.0.20', 'pop3'), qr/^Auth-Status: OK\r$/m,
	'carol still logs in through her alias from where she did before');

sub apop {
	my ($user, $digest, $ip) = @_;
	return http("GET /auth-alias HTTP/1.0\r\nHost: localhost\r\nAuth-Method: apop\r\n"
		. "Auth-User: $user\r\nAuth-Pass: $digest\r\nAuth-Salt: <4711.1\@example.org>\r\n"
		. "Auth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: $ip\r\n\r\n") // '';
}

apop('dave@example.org', md5_hex("guess-$_"), "127.0.0.3$_") for 1 .. 3;
like(apop('dave', md5_hex('<4711.1@example.org>dave pw'), '127.0.0.39'), qr/^Auth-Status: .*Invalid/m,
	'three APOP guesses through the alias count on dave: his right digest is refused now');

# 4. a repeated wrong password: counted once, checked 3 times, then at most once a second

# (pop3: user=3/m, ip=4/m: a refused repeat must not count either)
my @repeats = map { login('/auth-bcrypt', 'bert', 'stale bert pw', '198.51.100.200', 'pop3') } 1 .. 20;
is(scalar(grep { /^Auth-Status: .*Invalid login or password\r$/m } @repeats), 20, '20 repeats of a wrong password: all refused');
my $log = $t->read_file('error.log');
my $checked = () = $log =~ /user="bert" client=198\.51\.100\.200 [^\n]*result=invalid reason="wrong password"/g;
ok($checked >= 3 && $checked <= 5, "$checked of them checked (bcrypt: 3, and one in each new second), the others refused without a check");
like(login('/auth-bcrypt', 'bert', 'bert pw', '198.51.100.200', 'pop3'), qr/^Auth-Status: OK\r$/m,
	'the right password from that client still logs in (20 repeats, checked or refused, counted once)');

# the password it repeated becomes bert's (the file replaced by rename): accepted within a second
# of the change, and once it logged in, the client's other logins with it are not held back
$t->write_file('users-bcrypt.new', 'bert:' . make_hash('doveadm-BLF-CRYPT', 'stale bert pw') . "\n");
rename("$d/users-bcrypt.new", "$d/users-bcrypt") or die "rename: $!";
ok(wait_for(5, sub { login('/auth-bcrypt', 'bert', 'stale bert pw', '198.51.100.200', 'pop3') =~ /^Auth-Status: OK\r$/m }),
	'the repeated password, now right, is accepted');
my @again = map { login('/auth-bcrypt', 'bert', 'stale bert pw', '198.51.100.200', 'pop3') } 1 .. 5;
is(scalar(grep { /^Auth-Status: OK\r$/m } @again), 5, 'and the same client\'s next 5 logins with it at once: all OK');

# 5. a header injected through Client-Host (lower-cased, as nginx's resolver writes names)

sub smtp_login {
	my ($extra) = @_;
	return http("GET /auth-tls HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
		. "Auth-User: plain\r\nAuth-Pass: $pw{plain}\r\nAuth-Protocol: smtp\r\n"
		. "Auth-Login-Attempt: 1\r\nClient-IP: 198.51.100.77\r\nClient-Host: a\r\n$extra"
		. "Auth-SMTP-Helo: x\r\nAuth-SMTP-From: MAIL FROM:<>\r\nAuth-SMTP-To: \r\n\r\n") // '';
}

like(smtp_login(''), qr/^Auth-Status: .*TLS|^Auth-Status: (?!OK)/m, 'cleartext SMTP login refused (mail_auth_require_tls smtp)');
unlike(smtp_login("auth-ssl: on\r\n"), qr/^Auth-Status: OK\r$/m, 'an injected "auth-ssl: on" does not pass for TLS');
like($t->read_file('error.log'), qr/result=bad-request reason="header \S{1,4}Auth-SSL\S{1,4} spelled otherwise than nginx spells it/, 'and the log says why');

# 6. the users file truncated in place and held empty for 1.5 s (a slow writer after `cat >`)

my $content = $t->read_file('users');
open my $fh, '>', "$d/users" or die "truncate: $!";
my ($polls, $held) = (0, 0);
my $until = time() + 1.5;
while (time() < $until) {
	$polls++;
	$held++ if login('/auth', 'plain', $pw{plain}, '203.0.113.99') =~ /^Auth-Status: OK\r$/m;
	select undef, undef, undef, 0.1;
}
print $fh $content;
close $fh;
is($held, $polls, "the file empty for 1.5 s: every login answered from what was served ($held of $polls)");
ok(wait_for(3, sub { login('/auth', 'plain', $pw{plain}, '203.0.113.99') =~ /^Auth-Status: OK\r$/m }),
	'and from the rewritten file after');


# 7. a stored hash asking for hours (bcrypt cost 31) must not be what unknown users pay

# the answer to one request within $secs seconds ('' if none)
sub answer_within {
	my ($secs, @req) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080), Proto => 'tcp') or die "connect: $!";
	print $s request(@req);
	my ($sel, $r) = (IO::Select->new($s), '');
	my $until = time() + $secs;
	while ((my $left = $until - time()) > 0) {
		last unless $sel->can_read($left);
		last unless sysread($s, $r, 4096, length $r);
	}
	close $s;
	return $r;
}

my $t0 = time();
like(answer_within(5, '/auth-costly', 'ghost', 'guess', '203.0.113.7'), qr/^Auth-Status: .*Invalid login or password\r$/m,
	'unknown user: refused within 5 s (not padded with bcrypt cost 31)');
like(answer_within(5, '/auth-costly', 'erin', 'wrong', '203.0.113.7'), qr/^Auth-Status: .*Invalid login or password\r$/m,
	'wrong password of a bcrypt(5) user: refused within 5 s');
like(answer_within(5, '/auth-costly', 'evil', 'evil pw', '203.0.113.7'), qr/^Auth-Status: .*Invalid login or password\r$/m,
	'the cost-31 user itself cannot log in, even with its password');
like(answer_within(5, '/auth-costly', 'erin', 'erin pw', '203.0.113.7'), qr/^Auth-Status: OK\r$/m, 'erin logs in');
like($t->read_file('error.log'), qr/users-costly:2: user "evil": BLF-CRYPT hash whose parameters ask for about \d+ s a verification \(at most 4 s are taken\), this user cannot log in/,
	'the load log says why');

# 8. the same guess repeated 6 times for a locked account and for an unknown name: alike

for my $user ('locked', 'nobody') {
	answer_within(5, '/auth-costly', $user, 'same guess', '203.0.113.8') for 1 .. 6;
}
$log = $t->read_file('error.log');
my %limited = map { my $u = $_; ($u => scalar(() = $log =~ /user="$u" client=203\.0\.113\.8 .*result=rate-limited/g)) } qw/ locked nobody /;
ok($limited{nobody} >= 2, "unknown name: repeats refused without a check ($limited{nobody} of 6)");
is($limited{locked}, $limited{nobody}, 'locked account: the same');

# 9. a right password the account's rules refuse gets what a wrong one gets

sub auth_wait {
	my ($user, $pass, $ip, $protocol) = @_;
	my $r = login('/auth-rules', $user, $pass, $ip, $protocol);
	my ($st) = $r =~ /^Auth-Status: (.*)\r$/m;
	my ($w) = $r =~ /^Auth-Wait: (\d+)\r$/m;
	return ($st // 'none') . ' / ' . ($w // 'no wait');
}
is(auth_wait('netpw', 'net pw', '203.0.113.20'), auth_wait('nobody9', 'net pw', '203.0.113.20'),
	'rules: a right password from a network the account does not allow answers as an unknown user (Auth-Wait too)');
is(auth_wait('offpw', 'off pw', '203.0.113.20', 'pop3'), auth_wait('nobody9', 'off pw', '203.0.113.20', 'pop3'),
	'rules: ... and one of a nologin account on POP3');

for my $user ('netpw', 'nobody9') {
	login('/auth-rules', $user, 'net pw', '203.0.113.21') for 1 .. 6;
}
$log = $t->read_file('error.log');
%limited = map { my $u = $_; ($u => scalar(() = $log =~ /user="$u" client=203\.0\.113\.21 .*result=rate-limited/g)) } qw/ netpw nobody9 /;
ok($limited{nobody9} >= 2, "rules: an unknown name's repeats are refused without a check ($limited{nobody9} of 6)");
is($limited{netpw}, $limited{nobody9}, 'rules: the right password refused by allow_nets: the same');

# (each from an address of its own: no repeat of one client; no cache)
sub median_time {
	my ($user, $pass, $net) = @_;
	my @t;
	for my $i (1 .. 5) {
		my $start = time();
		login('/auth-rules-fresh', $user, $pass, "$net.$i");
		push @t, time() - $start;
	}
	@t = sort { $a <=> $b } @t;
	return $t[2];
}
my $unknown = median_time('nobody9', 'net pw', '198.51.100');
my $right = median_time('netpw', 'net pw', '192.0.2');
ok($right > $unknown / 2, sprintf('rules: the refused right password is padded to the bcrypt template '
	. '(%.1f ms, an unknown user %.1f ms)', $right * 1000, $unknown * 1000));

# the verdict of a costly right password refused by allow_nets is kept as long as a wrong one's
login('/auth-rules', 'netcost', 'netcost pw', '203.0.113.22');
login('/auth-rules', 'netcost', 'wrong pw', '203.0.113.22');
select undef, undef, undef, 2.2;
login('/auth-rules', 'netcost', 'netcost pw', '203.0.113.22');
login('/auth-rules', 'netcost', 'wrong pw', '203.0.113.22');
my @lines = grep { /user="netcost" client=203\.0\.113\.22 / } split /\n/, $t->read_file('error.log');
is(scalar(@lines), 4, 'rules: four decisions for netcost');
is(scalar(grep { /cached verdict/ } @lines), 0,
	'rules: after 2 s (negative_ttl=1s, ttl=1h) neither the right nor the wrong password is a cached verdict');
like($lines[2] // '', qr/result=network-denied/, 'rules: the right one is still refused by its network');

###############################################################################
