#!/usr/bin/perl

# Tests for ngx-mail-auth: the trust a successful login gives its client group (the user's ban
# does not refuse it), through the real nginx with two workers.
#   1. a flood of failures under many names from fresh addresses does not push the owner's
#      trust out of the limiter zone: the owner of the banned account still logs in
#   2. trust is for the account as the store knows it: a zone declared at server level, shared
#      by two locations with different stores, does not let the client trusted for one store's
#      alice past the ban of the other store's alice
#   3. in a case-sensitive store, Jose and jose are two accounts: trust for one is not trust
#      for the other
#   4. the same with two SQLite stores on one database file, told apart by their queries (one
#      tenant each): the client trusted for tenant b's alice is not trusted for tenant a's
# Requests are made as nginx mail makes them (auth_http with Client-IP: only a header, every
# request goes to 127.0.0.1).

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ sleep /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);

my $d = $t->testdir();
$t->write_file('flood-users', "victim:{PLAIN}victim-pw\n");
$t->write_file('a-users', "alice:{PLAIN}a-pw\n");
$t->write_file('b-users', "alice:{PLAIN}b-pw\n");
$t->write_file('cs-users', "Jose:{PLAIN}upper-pw\njose:{PLAIN}lower-pw\n");
chmod 0644, glob("$d/*-users");

# one database, two tenants, an alice in each (made before nginx starts: nginx -t checks the
# queries)
my $have_sqlite = have_tool('sqlite3');
if ($have_sqlite) {
	system('sqlite3', "$d/tenants.db", "CREATE TABLE accounts (tenant TEXT, name TEXT, password TEXT); "
		. "INSERT INTO accounts VALUES ('a', 'alice', '{PLAIN}ta-pw'), ('b', 'alice', '{PLAIN}tb-pw');") == 0
		or die "sqlite3 failed\n";
	chmod 0644, "$d/tenants.db";
}

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

        # one zone for the server: /a and /b have stores of their own
        mail_auth_limit zone=shared:1m ip=10/m user=3/m;

        location = /a {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/a-users;
        }

        location = /b {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/b-users;
        }

        location = /cs {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/cs-users;
        }

        location /tenant- {
            # one zone for both tenants' locations, as if at server level
            mail_auth_limit zone=tenants:1m ip=10/m user=3/m;

            location = /tenant-a {
                mail_auth;
                mail_auth_sqlite %%TESTDIR%%/tenants.db;
                mail_auth_sqlite_query "SELECT password FROM accounts WHERE name = :user AND tenant = 'a'";
            }

            location = /tenant-b {
                mail_auth;
                mail_auth_sqlite %%TESTDIR%%/tenants.db;
                mail_auth_sqlite_query "SELECT password FROM accounts WHERE name = :user AND tenant = 'b'";
            }
        }

        location /flood {
            mail_auth_limit zone=tr:32k ip=3/m user=3/h;

            location = /flood {
                mail_auth;
                mail_auth_passwd_file %%TESTDIR%%/flood-users;
            }

            location = /flood-metrics {
                mail_auth_status;
            }
        }
    }
}

EOF

$t->run()->plan(21);

###############################################################################

my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';

sub log_size { return length $_[0]->read_file('error.log'); }

# One login; returns "STATUS RESULT": the Auth-Status and the result its decision line logged
# (since offset $from, for that client).
sub login {
	my ($t, $uri, $user, $pass, $ip) = @_;
	my $from = log_size($t);
	my $r = auth_http($uri, 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => $pass,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip) // '';
	my $status = $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
	$status = 'invalid' if $status eq $INVALID;
	my $result = wait_for(2, sub {
		my ($line) = grep { / mail_auth: user="[^"]*" client=\Q$ip\E / }
			split /\n/, substr($t->read_file('error.log'), $from);
		return $line && $line =~ / result=(\S+) / ? $1 : undef;
	}) // 'no-line';
	return "$status $result";
}

###############################################################################

# 1. A flood does not evict the owner's trust: user=3/h, a 32k zone (about 500 slots)

is(login($t, '/flood', 'victim', 'victim-pw', '127.0.0.20'), 'OK ok', 'flood: the owner logs in');
login($t, '/flood', 'victim', "guess-$_", '127.0.0.' . (20 + $_)) for 1 .. 3;
is(login($t, '/flood', 'victim', 'victim-pw', '127.0.0.24'), 'invalid rate-limited',
	'flood: the account is banned (another client with the right password is refused)');
is(login($t, '/flood', 'victim', 'victim-pw', '127.0.0.20'), 'OK ok',
	'flood: the owner\'s trusted client still logs in');

SKIP: {
skip 'a flood of 400 requests: not under valgrind', 4 if $ENV{TEST_NGINX_VALGRIND};

# the zone's LRU clock counts seconds: let the owner's trust be older than the flood
sleep 1.1;
my $answered = 0;
for my $i (1 .. 400) {
	my $ip = sprintf('10.%d.%d.%d', 20 + ($i >> 16), ($i >> 8) & 255, $i & 255);
	$answered++ if login($t, '/flood', "flood-$i", "guess-$i", $ip) =~ /^invalid /;
}
is($answered, 400, 'flood: 400 failures under 400 names from 400 fresh addresses');
is(login($t, '/flood', 'victim', 'victim-pw', '127.0.0.20'), 'OK ok',
	'flood: afterwards the owner\'s trusted client still logs in (its trust was evicted before)');
is(login($t, '/flood', 'victim', 'victim-pw', '127.0.0.25'), 'invalid rate-limited',
	'flood: the account\'s ban is kept');
my $m = http_get('/flood-metrics') // '';
ok($m =~ /^mail_auth_limiter_evictions_total (\d+)$/m && $1 > 0,
	'flood: the zone was full (mail_auth_limiter_evictions_total ' . ($1 // 'absent') . ')') or diag($m);
}

###############################################################################

# 2. Trust is per store: /a and /b share the server's zone, each has an alice of its own

is(login($t, '/b', 'alice', 'b-pw', '127.0.0.40'), 'OK ok', 'stores: /b\'s alice logs in from .40');
login($t, '/a', 'alice', "guess-$_", '127.0.0.' . (40 + $_)) for 1 .. 3;
is(login($t, '/a', 'alice', 'a-pw', '127.0.0.44'), 'invalid rate-limited', 'stores: alice is banned');
is(login($t, '/a', 'alice', 'a-pw', '127.0.0.40'), 'invalid rate-limited',
	'stores: /a\'s alice from .40 (trusted for /b\'s alice only) is refused by the ban (it logged in before)');
is(login($t, '/a', 'alice', 'guess-4', '127.0.0.40'), 'invalid rate-limited',
	'stores: ... and its guesses are refused without a check (they were checked before)');
is(login($t, '/b', 'alice', 'b-pw', '127.0.0.40'), 'OK ok', 'stores: /b\'s alice still logs in from .40');

###############################################################################

# 3. A case-sensitive store: Jose and jose are two accounts (one user budget: names fold)

is(login($t, '/cs', 'Jose', 'upper-pw', '127.0.0.50'), 'OK ok', 'case: Jose logs in from .50');
login($t, '/cs', 'jose', "guess-$_", '127.0.0.' . (50 + $_)) for 1 .. 3;
is(login($t, '/cs', 'jose', 'lower-pw', '127.0.0.54'), 'invalid rate-limited', 'case: jose is banned');
is(login($t, '/cs', 'jose', 'lower-pw', '127.0.0.50'), 'invalid rate-limited',
	'case: jose from .50 (trusted for Jose only) is refused by the ban (it logged in before)');
is(login($t, '/cs', 'Jose', 'upper-pw', '127.0.0.50'), 'OK ok', 'case: Jose still logs in from .50');
###############################################################################

# 4. Trust is per store, and a SQLite store is its file and its query: /tenant-a and /tenant-b
#    read one database file, each its own tenant's alice

SKIP: {
skip 'sqlite3 not installed', 5 unless $have_sqlite;

is(login($t, '/tenant-b', 'alice', 'tb-pw', '127.0.0.5'), 'OK ok', 'tenants: b\'s alice logs in from .5');
login($t, '/tenant-a', 'alice', "guess-$_", '127.0.0.' . (60 + $_)) for 1 .. 3;
is(login($t, '/tenant-a', 'alice', 'ta-pw', '127.0.0.64'), 'invalid rate-limited',
	'tenants: a\'s alice is banned');
is(login($t, '/tenant-a', 'alice', 'guess-4', '127.0.0.5'), 'invalid rate-limited',
	'tenants: a guess at a\'s alice from .5 (trusted for b\'s alice only) is refused without a check');
is(login($t, '/tenant-a', 'alice', 'ta-pw', '127.0.0.5'), 'invalid rate-limited',
	'tenants: ... and a\'s right password from .5 is refused by the ban');
is(login($t, '/tenant-b', 'alice', 'tb-pw', '127.0.0.5'), 'OK ok', 'tenants: b\'s alice still logs in from .5');
}

###############################################################################
