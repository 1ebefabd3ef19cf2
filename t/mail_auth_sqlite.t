#!/usr/bin/perl

# Tests for ngx-mail-auth: the SQLite store through nginx's mail proxy. Users are created with
# the admin tool (mail-auth-user) and the sqlite3 CLI; per-user routing to two backends, alias
# login rewritten for the backend, disabled / protocol / network refusals, a database deleted,
# corrupted or locked while nginx runs (temporary failure, then recovery), a bad query refused
# by `nginx -t`, and SQL injection attempts in user names.

###############################################################################

use warnings;
use strict;

use Test::More;
use File::Copy qw/ copy /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use Test::Nginx::POP3;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";

my $t = Test::Nginx->new()->has(qw/mail imap pop3 smtp http/);
workers_can_read($t);
plan(skip_all => "mail-auth-user not built ($tool)") unless -x $tool;
plan(skip_all => 'sqlite3 not installed') unless have_tool('sqlite3');

my $d = $t->testdir();
my $db = "$d/users.db";

sub tool { system($tool, '--sqlite', $db, @_) == 0 or die "mail-auth-user @_ failed\n"; }
sub sql { system('sqlite3', $db, @_) == 0 or die "sqlite3 @_ failed\n"; }

tool('init');
# (the tool makes a new database 0640; the workers may not run as its owner)
chmod 0644, $db or die "chmod: $!\n";
tool('add', $_->[0], '--password', $_->[1], '--cost', '5') for
	[alice => 'alice-pw'], [bob => 'bob-pw'], [info => 'info-pw'], [dave => 'dave-pw'],
	[erin => 'erin-pw'], [frank => 'frank-pw'];
tool('add', 'gina', '--password', 'gina pw%', '--scheme', 'sha512-crypt');
tool('disable', 'dave');
sql("UPDATE users SET server = '127.0.0.1', port = " . port(8146) . " WHERE name = 'bob'");
sql("UPDATE users SET backend_user = 'carol' WHERE name = 'info'");
sql("UPDATE users SET protocols = 'pop3' WHERE name = 'erin'");
sql("UPDATE users SET networks = '10.0.0.0/8, 2001:db8::/32' WHERE name = 'frank'");
sql("CREATE TABLE blocked (ip TEXT); INSERT INTO blocked VALUES ('127.0.0.1')");
copy($db, "$d/users.db.good") or die;

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/users.db;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_backend smtp 127.0.0.1:%%PORT_8026%%;
            mail_auth_fail_wait 0;
        }

        # a store rule on the client's address: the blocked table names 127.0.0.1
        location = /auth-blocked {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/users.db;
            mail_auth_sqlite_query "SELECT name, password FROM users WHERE name = :user AND :client_ip NOT IN (SELECT ip FROM blocked)";
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 0;
        }

        # a Dovecot-style refusal column, then the account's enabled flag after it
        location = /auth-nologin-enabled {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/users.db;
            mail_auth_sqlite_query "SELECT name, password, CASE WHEN name = 'alice' THEN 'Y' END AS nologin, enabled FROM users WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 0;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;
    xclient    on;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
    }

    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  plain login;
    }
}

EOF

my %backend = (alice => 'alice-pw', carol => 'info-pw', erin => 'erin-pw', gina => 'gina pw%');
$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend-a.log", %backend);
$t->run_daemon(\&MailAuthBackend::imap, port(8146), "$d/backend-b.log", bob => 'bob-pw');
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/backend-a.log", %backend);
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), "$d/backend-a.log", %backend);
$t->run()->plan(36);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8144, 8146, 8111, 8026;

sub imap {
	my ($user, $pass) = @_;
	my $s = Test::Nginx::IMAP->new();
	$s->read();
	$s->send(qq{a01 LOGIN "$user" "$pass"});
	return $s->read() // '';
}

###############################################################################

# :client_ip has one spelling: nginx mail sends an IPv4 client of a dual-stack listener
# (listen [::]:143 ipv6only=off) as ::ffff:a.b.c.d, which a query's text compare missed (the
# module's own rules and limiter compared both forms alike)
for my $ip ('127.0.0.1', '::ffff:127.0.0.1') {
	my $r = auth_http('/auth-blocked', 'Auth-Method' => 'plain', 'Auth-User' => 'alice',
		'Auth-Pass' => 'alice-pw', 'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip);
	like($r, qr/Auth-Status: .*Invalid login/, "a client the query blocks, as $ip: refused (the user not found)");
}

# a refusing column is not undone by an enabled column after it, and a restriction given twice
# is not the last one taken (before: alice logged in, and frank from anywhere)
sub login_at {
	my ($loc, $user, $pass) = @_;
	return auth_http($loc, 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => $pass,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1');
}
like(login_at('/auth-nologin-enabled', 'alice', 'alice-pw'), qr/^Auth-Status: .*CONTACTADMIN/m,
	'nologin, then enabled = 1: still refused as disabled');
like(login_at('/auth-nologin-enabled', 'bob', 'bob-pw'), qr/^Auth-Status: OK\r$/m, 'without nologin: OK');
# the network restriction given twice (the module's name and Dovecot's): before, the last one
# was taken, and frank logged in from anywhere; now nginx -t refuses the query
my ($code, $msg) = nginx_t_with($t, qr/mail_auth_sqlite \S+;/, "mail_auth_sqlite $d/users.db;\n"
	. qq{mail_auth_sqlite_query "SELECT name, password, networks, '0.0.0.0/0' AS allow_nets FROM users WHERE name = :user";});
ok($code != 0 && $msg =~ /returns the field of its column "allow_nets" twice/,
	'nginx -t: networks and allow_nets both returned, refused') or diag("exit $code: $msg");

like(imap('alice', 'alice-pw'), qr/^a01 OK/, 'bcrypt user from mail-auth-user');
like($t->read_file('backend-a.log'), qr/^imap ok user=alice pass=alice-pw$/m,
	'default backend reached');
like(imap('bob', 'bob-pw'), qr/^a01 OK/, 'per-user backend');
like($t->read_file('backend-b.log'), qr/^imap ok user=bob /m, 'routed to the second backend');
unlike($t->read_file('backend-a.log'), qr/user=bob/, 'not to the default one');
like(imap('info', 'info-pw'), qr/^a01 OK/, 'alias login');
like($t->read_file('backend-a.log'), qr/^imap ok user=carol pass=info-pw$/m,
	'backend sees the real user');
like(imap('gina', 'gina pw%'), qr/^a01 OK/, 'SHA-512-crypt from mail-auth-user');

like(imap('alice', 'wrong'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/, 'wrong password');
# the right password of an account that may not log in: "ask the admin" (RFC 5530); a wrong one
# gets what any wrong password gets, so a guesser learns nothing about the account
like(imap('dave', 'dave-pw'), qr/^a01 NO \[CONTACTADMIN\] /, 'disabled user refused: contact the admin');
like(imap('dave', 'not-dave-pw'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'disabled user, wrong password: the usual refusal');
# a protocol not allowed: not told apart from a wrong password (the right password confirmed
# here would be tried on an allowed protocol)
like(imap('erin', 'erin-pw'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'protocol not allowed, right password: the usual refusal');
like(imap('erin', 'not-erin-pw'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'protocol not allowed, wrong password: the usual refusal');
my ($rc, $out) = real_client('pop3', '127.0.0.1', port(8110), 'erin', 'erin-pw');
is($rc, 0, 'allowed protocol (pop3) accepted') or diag($out);
like(imap('frank', 'frank-pw'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'network not allowed refused, not told even with the right password');
($rc, $out) = real_client('smtp', '127.0.0.1', port(8025), 'alice', 'alice-pw');
is($rc, 0, 'smtp login from SQLite') or diag($out);

like(imap("' OR 1=1 --", 'x'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'SQL injection in user name');
like(imap("x'; DROP TABLE users; --", 'x'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid/, 'SQL injection with DROP');
like(imap('alice', 'alice-pw'), qr/^a01 OK/, 'table survived');

# database gone, corrupt, locked: temporary failure, then recovery without reload

rename($db, "$db.away") or die;
ok(wait_for(5, sub { imap('alice', 'alice-pw') =~ /^a01 NO \[UNAVAILABLE\] Temporary server problem/ }),
	'database deleted: temporary failure');
rename("$db.away", $db) or die;
ok(wait_for(5, sub { imap('alice', 'alice-pw') =~ /^a01 OK/ }), 'database restored: recovered');

$t->write_file('garbage', 'not a database ' x 100);
rename("$d/garbage", $db) or die;
ok(wait_for(5, sub { imap('alice', 'alice-pw') =~ /^a01 NO \[UNAVAILABLE\] Temporary server problem/ }),
	'corrupt database: temporary failure');
copy("$d/users.db.good", "$db.new") or die;
rename("$db.new", $db) or die;

# a writer holds an exclusive lock for 3 seconds
ok(wait_for(5, sub { imap('alice', 'alice-pw') =~ /^a01 OK/ }), 'recovered before locking');
my $locker = fork();
if ($locker == 0) {
	exec('python3', '-c', 'import sqlite3, sys, time; '
		. 'c = sqlite3.connect(sys.argv[1], isolation_level=None); '
		. 'c.execute("BEGIN EXCLUSIVE"); c.execute("UPDATE users SET enabled = 1"); '
		. 'open(sys.argv[2], "w").close(); time.sleep(3); c.execute("COMMIT")',
		$db, "$d/locked");
	exit 1;
}
$t->waitforfile("$d/locked");
like(imap('alice', 'alice-pw'), qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/,
	'locked database: quick temporary failure');
waitpid($locker, 0);
ok(wait_for(5, sub { imap('alice', 'alice-pw') =~ /^a01 OK/ }), 'lock released: recovered');

like($t->read_file('error.log'), qr/\[error\].*users\.db.*(not a database|locked)/,
	'store problems logged with file and cause');

###############################################################################

# a query with a syntax error, or without a password column, is refused by nginx -t

my $conf = $t->read_file('nginx.conf');
(my $bad = $conf) =~ s!(mail_auth_sqlite \S+;)!$1\n            mail_auth_sqlite_query "SELEC password FROM users WHERE name = :user";!;
$t->write_file('bad.conf', $bad);
(my $nopw = $conf) =~ s!(mail_auth_sqlite \S+;)!$1\n            mail_auth_sqlite_query "SELECT name FROM users WHERE name = :user";!;
$t->write_file('nopw.conf', $nopw);

my $nt = sub {
	my ($c) = @_;
	my $out = `$Test::Nginx::NGINX -t -p $d/ -c $c -e error-t.log 2>&1`;
	return ($? >> 8, $out);
};
($code, $msg) = $nt->('bad.conf');
ok($code != 0 && $msg =~ /invalid query: .*syntax error/, 'nginx -t: query syntax error')
	or diag($msg);
($code, $msg) = $nt->('nopw.conf');
ok($code != 0 && $msg =~ /does not return a "password" column/, 'nginx -t: no password column')
	or diag($msg);

# a row with a password of 8 MB (a hostile or broken row): reading it is one step of SQLite,
# which the event loop's 1 ms budget cannot interrupt, then copied again. Refused (SQLite's
# length limit: 1 MiB), a temporary failure and a log line; the other users log in

open my $big, '|-', 'sqlite3', $db or die "sqlite3: $!\n";
print $big "INSERT INTO users (name, password) VALUES ('huge', '{PLAIN}' || hex(zeroblob(4 * 1024 * 1024)));\n";
close $big or die "sqlite3 failed\n";
ok(wait_for(5, sub { imap('huge', 'x') =~ /^a01 NO \[UNAVAILABLE\] Temporary server problem/ }),
	'a password of 8 MB: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*mail_auth: .*(too big|TOOBIG)/i, 'logged: too big');
like(imap('alice', 'alice-pw'), qr/^a01 OK/, 'others log in');

###############################################################################
