#!/usr/bin/perl

# Tests for ngx-mail-auth: the credential cache and the brute-force limiter, both in shared
# memory, with two worker processes. Requests are made as nginx mail makes them (auth_http
# with Client-IP), over new connections that reuseport spreads across the workers.
# At the end: a ban kept by nginx -s reload (the zone's name and size unchanged), and lost by a
# reload that resizes the zone (nginx makes a new, empty one: documented as not guaranteed).

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthAttack;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

my $d = $t->testdir();
system("htpasswd -cbB -C 10 $d/users alice alice-pw 2>/dev/null") == 0 or die;
system("htpasswd -bB -C 5 $d/users bob bob-pw 2>/dev/null") == 0 or die;

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_cache zone=creds:1m ttl=60s negative_ttl=30s;
    mail_auth_limit zone=brute:1m ip=10/6s user=3/6s;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:1143;
            mail_auth_fail_wait 1s;
        }

        location = /banned {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:1143;
            mail_auth_fail_wait 0;
            mail_auth_limit zone=reloadban:1m ip=3/m ban=10m;
        }
    }
}

EOF

$t->run()->plan(20);

###############################################################################

sub login {
	my ($ip, $user, $pass) = @_;
	return auth_http('/auth', 'Auth-Method' => 'plain', 'Auth-User' => $user,
		'Auth-Pass' => $pass, 'Auth-Protocol' => 'imap', 'Client-IP' => $ip) // '';
}

sub decisions {
	my ($t, $re) = @_;
	return grep { /$re/ } split /\n/, $t->read_file('error.log');
}

# the cache: a second login with the same credentials skips the bcrypt (logged as cached)

like(login('192.0.2.1', 'alice', 'alice-pw'), qr/^Auth-Status: OK\r$/m, 'first login');
like(login('192.0.2.1', 'alice', 'alice-pw'), qr/^Auth-Status: OK\r$/m, 'second login');
my @alice = decisions($t, qr/user="alice".*result=ok/);
is(scalar @alice, 2, 'two decisions logged');
unlike($alice[0], qr/cached verdict/, 'first: verified');
like($alice[1], qr/cached verdict/, 'second: cached verdict (no bcrypt), shared by the workers');

# a password change in the store wins over the cache

system("htpasswd -bB -C 5 $d/users alice new-pw 2>/dev/null") == 0 or die;
ok(wait_for(5, sub { login('192.0.2.1', 'alice', 'new-pw') =~ /^Auth-Status: OK\r$/m }),
	'new password accepted despite the cache');
# each worker re-checks the file at most once a second: let both see the change
select undef, undef, undef, 1.2;
like(login('192.0.2.1', 'alice', 'alice-pw'), qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login/m,
	'old (cached) password refused after the change');

# the per-IP limit, counted across both workers

login('198.51.100.1', "user$_", "guess$_") for 1 .. 10;
my %pids = map { /\[\w+\] (\d+)#/ ? ($1 => 1) : () }
	decisions($t, qr/client=198\.51\.100\.1 .*result=(invalid|unknown-user)/);
cmp_ok(scalar keys %pids, '>=', 2, 'failures were served by both workers');
my $r = login('198.51.100.1', 'bob', 'bob-pw');
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'over the IP limit: refused even with the right password');
like($r, qr/^Auth-Wait: [1-9]\d*\r$/m, 'refusal carries Auth-Wait');
like($t->read_file('error.log'), qr/client=198\.51\.100\.1 .*result=rate-limited reason="too many failed logins from 198\.51\.100\.1/,
	'refusal logged');

# the same wrong password repeated counts once (a client with a stale saved password)

login('198.51.100.2', 'bob', 'stale-password') for 1 .. 15;
like(login('198.51.100.2', 'bob', 'bob-pw'), qr/^Auth-Status: OK\r$/m, 'same wrong password counted once');

# the per-user limit does not lock out an IP that logged in successfully

like(login('198.51.100.3', 'alice', 'new-pw'), qr/^Auth-Status: OK\r$/m, 'owner logs in');
login("203.0.113.$_", 'alice', "attack$_") for 1 .. 5;
like(login('198.51.100.4', 'alice', 'new-pw'), qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login/m,
	'user limit refuses unknown IPs');
like(login('198.51.100.3', 'alice', 'new-pw'), qr/^Auth-Status: OK\r$/m,
	'the owner\'s IP is not locked out by the attack');

# ... and everything recovers after the window

ok(wait_for(10, sub { login('198.51.100.1', 'bob', 'bob-pw') =~ /^Auth-Status: OK\r$/m }),
	'IP allowed again after the window');

# a ban and nginx -s reload

sub banned_login {
	my ($ip, $pass) = @_;
	my $r = auth_http('/banned', 'Auth-Method' => 'plain', 'Auth-User' => 'bob',
		'Auth-Pass' => $pass, 'Auth-Protocol' => 'imap', 'Client-IP' => $ip) // '';
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

banned_login('198.51.100.20', "reload-guess$_") for 1 .. 3;
isnt(banned_login('198.51.100.20', 'bob-pw'), 'OK', 'ip=3/m ban=10m: banned, the right password refused');
ok(reload_and_wait($t), 'nginx -s reload: new workers') or diag('the old workers did not leave');
isnt(banned_login('198.51.100.20', 'bob-pw'), 'OK', 'after the reload: still banned (the zone kept)');
(my $conf = $t->read_file('nginx.conf')) =~ s/zone=reloadban:1m/zone=reloadban:2m/ or die "no reloadban zone\n";
$t->write_file('nginx.conf', $conf);
reload_and_wait($t);
is(banned_login('198.51.100.20', 'bob-pw'), 'OK', 'a reload that resizes the zone: a new, empty zone, the ban gone (not guaranteed, README)');

###############################################################################
