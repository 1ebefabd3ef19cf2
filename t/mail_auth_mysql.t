#!/usr/bin/perl

# Tests for ngx-mail-auth: the MySQL/MariaDB store (mail_auth_sql mysql) through nginx's mail
# proxy, against a throwaway MariaDB (mariadb-install-db + mariadbd on a datadir in the test
# directory, loopback only, as the "mysql" user when the test runs as root). nginx starts while
# the server is down (temporary failures, no refusal to start); then right/wrong password,
# unknown user, disabled account, per-user backend routing, protocol and network columns,
# failover past a dead first server, TLS with the server's certificate verified (and refused
# with another CA), a lookup blocked on a lock in the database while other logins and another
# location are answered, lookups abandoned at query_timeout given up by the server too (none left
# waiting on the lock), and the server stopped mid-run (temporary failures) and restarted
# (recovery without reload).

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::IP;
use POSIX qw//;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my ($server) = grep { -x } qw| /usr/sbin/mariadbd /usr/sbin/mysqld |;
plan(skip_all => 'MariaDB server not installed (mariadb-server package)') unless $server;
plan(skip_all => 'mariadb-install-db not installed') unless have_tool('mariadb-install-db');
plan(skip_all => 'mariadb client not installed') unless have_tool('mariadb');
plan(skip_all => 'openssl not installed') unless have_tool('openssl');

my $t = Test::Nginx->new()->has(qw/mail imap pop3 http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
workers_can_read($t);

my $d = $t->testdir();
my $my = "$d/my";
my $myport = port(8432);

# failover past a server that cannot prepare the query: the one MariaDB, reached over 127.0.0.1
# and ::1 by one user name whose two accounts (MariaDB tells them apart by the client's address)
# have different grants
# (several bind addresses: MariaDB 10.11 on)
my ($major, $minor) = `$server --version 2>/dev/null` =~ /Ver (\d+)\.(\d+)/;
my $v6 = IO::Socket::IP->new(Listen => 1, LocalAddr => '[::1]:0')
	&& ($major // 0) * 1000 + ($minor // 0) >= 10011 ? 1 : 0;

# as root the server runs as "mysql" (it owns the datadir)
my $user = $> == 0 ? 'mysql' : getpwuid($>);
plan(skip_all => 'running as root without a "mysql" user') unless defined getpwnam($user);
my @owner = (getpwnam($user))[2, 3];

mkdir $my or die;
chown @owner, $my;
system("mariadb-install-db --no-defaults --datadir=$my/data --user=$user --skip-test-db "
	. "--auth-root-authentication-method=socket > $d/install-db.log 2>&1") == 0
	or die "mariadb-install-db failed, see install-db.log\n";

# TLS: a server certificate for 127.0.0.1 from the test CA; another CA that did not sign it
make_server_cert($t);
make_client_cert($t, 'rogue', rogue => 1, name => 'rogue-ca');
for (qw/ server.crt server.key ca.crt /) {
	system('cp', "$d/$_", "$my/$_") == 0 or die;
	chown @owner, "$my/$_";
	chmod 0600, "$my/$_";
}

# the server's pid while it runs: stopped whatever happens, the test's exit code kept
# (only in this process: not in the children that daemons fork)
my $mariadbd;
my $test_pid = $$;
END {
	local $?;
	if ($mariadbd && $$ == $test_pid) { kill 'TERM', $mariadbd; waitpid($mariadbd, 0); }
}

sub my_start {
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', "$d/mariadbd.out";
		open STDERR, '>&', \*STDOUT;
		no warnings qw/ exec /;
		exec($server, '--no-defaults', "--datadir=$my/data", "--socket=$my/sock", "--port=$myport",
			'--bind-address=127.0.0.1' . ($v6 ? ',::1' : ''), "--user=$user", "--pid-file=$my/pid", "--log-error=$my/error.log",
			'--skip-name-resolve', '--innodb-buffer-pool-size=16M', '--skip-log-bin',
			"--ssl-cert=$my/server.crt", "--ssl-key=$my/server.key", "--ssl-ca=$my/ca.crt");
		POSIX::_exit(127);
	}
	$mariadbd = $pid;
	return wait_for(30, sub { -S "$my/sock" && IO::Socket::INET->new(PeerAddr => "127.0.0.1:$myport") });
}

sub my_stop {
	kill 'KILL', $mariadbd;
	waitpid($mariadbd, 0);
	undef $mariadbd;
	unlink "$my/sock";
}

# the mariadb client as root over the socket; its output
sub sql {
	my ($sql) = @_;
	open my $fh, '-|', 'mariadb', '--no-defaults', '-u', 'root', "--socket=$my/sock", '-N', '-B',
		'-e', $sql or die "mariadb: $!\n";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	die "mariadb failed: $sql\n" if $?;
	return $out;
}

$t->write_file('mailauth.pw', "mail auth pw\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # the first server is dead (nothing listens there): failover to the second
    mail_auth_sql mysql "host=127.0.0.1,127.0.0.1 port=%%PORT_8433%%,%%PORT_8432%% user=mailauth dbname=mail"
                  password_file=%%TESTDIR%%/mailauth.pw connect_timeout=2s query_timeout=60s pool=2;
    mail_auth_sql_query "SELECT name, password, enabled, protocols, networks, server, port,
                                backend_user AS user
                         FROM users
                         WHERE name = :user
                           AND (slow = 0 OR GET_LOCK('sloth', 60) + RELEASE_LOCK('sloth') = 2)";

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-tls {
            mail_auth_sql mysql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth_tls dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw ssl_ca=%%TESTDIR%%/ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-rogue-ca {
            mail_auth_sql mysql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw ssl_ca=%%TESTDIR%%/rogue-ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-short {
            mail_auth_sql mysql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw query_timeout=1s;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        # a query without a name column, on a table of MariaDB's default accent-insensitive
        # utf8mb4 collation: every accented spelling of renee finds her row
        location = /auth-accents {
            mail_auth;
            mail_auth_sql_query "SELECT password FROM accents WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
            mail_auth_limit zone=my_accents:1m user=3/m;
        }

        # the first server accepts the connection but cannot prepare the query (no grant on
        # users there, as a Galera node outside the primary component refuses): the second
        # is tried
        location = /auth-unprepared {
            mail_auth_sql mysql "host=127.0.0.1,::1 port=%%PORT_8432%% user=mailauth_split dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw;
            mail_auth;
            mail_auth_sql_query "SELECT password FROM users WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-unprepared-only {
            mail_auth_sql mysql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth_split dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw;
            mail_auth;
            mail_auth_sql_query "SELECT password FROM users WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        # SELECT * on a table changed under the prepared statement
        location = /auth-star {
            mail_auth;
            mail_auth_sql_query "SELECT * FROM star WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        # an enabled flag of type BIT(1), as some schemas keep it
        location = /auth-bits {
            mail_auth;
            mail_auth_sql_query "SELECT name, password, enabled FROM bits WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        # the network restriction given twice (the module's name and Dovecot's)
        location = /auth-nets-twice {
            mail_auth;
            mail_auth_sql_query "SELECT name, password, networks, '0.0.0.0/0' AS allow_nets FROM users WHERE name = :user";
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /ping {
            return 200 "pong\n";
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
    }

    server {
        listen     127.0.0.1:8153;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-tls;
    }

    server {
        listen     127.0.0.1:8163;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-rogue-ca;
    }

    server {
        listen     127.0.0.1:8173;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-short;
    }

    server {
        listen     127.0.0.1:8183;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-unprepared;
    }

    server {
        listen     127.0.0.1:8193;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-unprepared-only;
    }
}

EOF

my %backend = (alice => 'alice-pw', carol => 'info-pw', erin => 'erin-pw', sloth => 'sloth-pw');
$t->run_daemon(\&MailAuthBackend::imap, port(8145), "$d/backend-a.log", %backend);
$t->run_daemon(\&MailAuthBackend::imap, port(8146), "$d/backend-b.log", bob => 'bob-pw');
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/backend-a.log", %backend);

# nginx starts while MariaDB is down
$t->run()->plan(45);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8145, 8146, 8111;

my $temp = qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/;
my $refused = qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/;

###############################################################################

like(imap_login('alice', 'alice-pw'), $temp, 'server down at start: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*mysql "127\.0\.0\.1,127\.0\.0\.1": cannot connect/,
	'server down logged');

my_start() or die "mariadbd did not start, see my/error.log\n";

my %h = map { $_ => make_hash('openssl-6', "$_-pw") // die "openssl passwd failed\n" }
	qw/ alice bob info dave erin frank sloth renee sam tom tim /;
my $b = port(8146);
sql(<<"SQL");
CREATE DATABASE mail;
CREATE USER 'mailauth'\@'127.0.0.1' IDENTIFIED BY 'mail auth pw';
CREATE USER 'mailauth_tls'\@'127.0.0.1' IDENTIFIED BY 'mail auth pw' REQUIRE SSL;
USE mail;
CREATE TABLE users (name varchar(64) PRIMARY KEY, password varchar(255), enabled boolean,
	protocols varchar(64), networks varchar(255), server varchar(64), port integer,
	backend_user varchar(64), slow boolean NOT NULL DEFAULT false);
GRANT SELECT ON mail.users TO 'mailauth'\@'127.0.0.1';
GRANT SELECT ON mail.users TO 'mailauth_tls'\@'127.0.0.1';
INSERT INTO users (name, password) VALUES ('alice', '$h{alice}'), ('info', '$h{info}'),
	('dave', '$h{dave}'), ('erin', '$h{erin}'), ('frank', '$h{frank}');
INSERT INTO users (name, password, server, port) VALUES ('bob', '$h{bob}', '127.0.0.1', $b);
INSERT INTO users (name, password, slow) VALUES ('sloth', '$h{sloth}', true);
CREATE TABLE accents (name varchar(64) PRIMARY KEY, password varchar(255))
	CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
GRANT SELECT ON mail.accents TO 'mailauth'\@'127.0.0.1';
INSERT INTO accents VALUES ('renee', '$h{renee}');
CREATE TABLE star (name varchar(64) PRIMARY KEY, password varchar(255), note varchar(64), enabled boolean);
GRANT SELECT ON mail.star TO 'mailauth'\@'127.0.0.1';
INSERT INTO star VALUES ('sam', '$h{sam}', 'a note', false);
CREATE TABLE bits (name varchar(64) PRIMARY KEY, password varchar(255), enabled BIT(1));
GRANT SELECT ON mail.bits TO 'mailauth'\@'127.0.0.1';
INSERT INTO bits VALUES ('tom', '$h{tom}', b'1'), ('tim', '$h{tim}', b'0');
CREATE USER 'mailauth_split'\@'127.0.0.1' IDENTIFIED BY 'mail auth pw';
GRANT SELECT ON mail.accents TO 'mailauth_split'\@'127.0.0.1';
CREATE USER 'mailauth_split'\@'::1' IDENTIFIED BY 'mail auth pw';
GRANT SELECT ON mail.users TO 'mailauth_split'\@'::1';
UPDATE users SET backend_user = 'carol' WHERE name = 'info';
UPDATE users SET enabled = false WHERE name = 'dave';
UPDATE users SET protocols = 'pop3' WHERE name = 'erin';
UPDATE users SET networks = '10.0.0.0/8' WHERE name = 'frank';
SQL

ok(wait_for(10, sub { imap_login('alice', 'alice-pw') =~ /^a01 OK/ }),
	'server up: recovered without reload (past the dead first server)');
like($t->read_file('backend-a.log'), qr/^imap ok user=alice pass=alice-pw$/m, 'default backend reached');
like($t->read_file('error.log'), qr/\[info\].*mysql .*usable again/, 'recovery logged');
like(imap_login('alice', 'wrong'), $refused, 'wrong password');
like(imap_login('nobody', 'x'), $refused, 'unknown user');
like(imap_login('bob', 'bob-pw'), qr/^a01 OK/, 'per-user backend');
like($t->read_file('backend-b.log'), qr/^imap ok user=bob /m, 'routed to the second backend');
like(imap_login('info', 'info-pw'), qr/^a01 OK/, 'alias login');
like($t->read_file('backend-a.log'), qr/^imap ok user=carol pass=info-pw$/m, 'backend sees the real user');
like(imap_login('dave', 'dave-pw'), qr/^a01 NO \[CONTACTADMIN\] /, 'disabled account');
like(imap_login('dave', 'x'), $refused, 'disabled account, wrong password: the usual refusal');
like(imap_login('erin', 'erin-pw'), qr/^a01 NO \[AUTHENTICATIONFAILED\] /, 'protocol column refuses imap (as a wrong password)');
my ($rc, $out) = real_client('pop3', '127.0.0.1', port(8110), 'erin', 'erin-pw');
is($rc, 0, 'protocol column allows pop3 (poplib)') or diag($out);
like(imap_login('frank', 'frank-pw'), $refused, 'network column refuses 127.0.0.1');
($rc, $out) = real_client('imap', '127.0.0.1', port(8143), "' OR 1=1 --", 'x');
isnt($rc, 0, 'SQL injection in the user name refused (imaplib)');

# accented spellings of one account share its per-user budget (user=3/m): MariaDB's collation
# finds renee for each, and keyed on the name as sent each spelling had a budget of its own
my $n = 0;
for my $u ("ren\xc3\xa9e", "r\xc3\xa9nee", "r\xc3\xa8nee", "ren\xc3\xa9\xc3\xa9", "R\xc3\xa9n\xc3\xa9e", "ren\xc3\xaae") {
	$n++;
	auth_http('/auth-accents', 'Auth-Method' => 'plain', 'Auth-User' => $u, 'Auth-Pass' => "guess-$n",
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '192.0.2.60');
}
my $checked = () = $t->read_file('error.log') =~ /client=192\.0\.2\.60 [^\n]*result=invalid reason="wrong password"/g;
is($checked, 3, '6 accented spellings of renee, found by the collation: 3 checked (her budget), the rest refused');
like(auth_http('/auth-accents', 'Auth-Method' => 'plain', 'Auth-User' => 'renee', 'Auth-Pass' => 'renee-pw',
	'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '192.0.2.61'), qr/^Auth-Status: .*Invalid/m,
	'renee herself, from elsewhere: banned by them');

# TLS to the server: verified with the CA that signed its certificate, refused with another
like(imap_login('alice', 'alice-pw', 8153), qr/^a01 OK/, 'TLS, server certificate verified');
like(sql("SHOW GRANTS FOR 'mailauth_tls'\@'127.0.0.1'"), qr/REQUIRE SSL/, 'the login above needs TLS');
like(imap_login('alice', 'alice-pw', 8163), $temp, 'TLS, certificate of another CA: temporary failure');

# a server that takes the connection but cannot prepare the query is passed over (before, it
# ended the failover: every login a temporary failure while a later server could answer)
like(imap_login('alice', 'alice-pw', 8193), $temp, 'the only server cannot prepare the query: temporary failure');
like($t->read_file('error.log'),
	qr/\[error\].*mysql "127\.0\.0\.1": cannot prepare the query: 127\.0\.0\.1:\d+: invalid query: .*denied/,
	'logged with the server and its refusal');
SKIP: {
skip 'no IPv6 loopback', 1 unless $v6;
like(imap_login('alice', 'alice-pw', 8183), qr/^a01 OK/,
	'the first server cannot prepare the query: the second answers');
}

# a SELECT * whose table loses a column while a pooled connection holds the prepared statement:
# the server re-prepares it and sends other columns; read by the names seen at prepare time,
# sam's enabled = 0 fell off the end and read as NULL (enabled), and sam logged in
sub sam {
	return auth_http('/auth-star', 'Auth-Method' => 'plain', 'Auth-User' => 'sam', 'Auth-Pass' => 'sam-pw',
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '192.0.2.70');
}
like(sam(), qr/^Auth-Status: .*CONTACTADMIN/m, 'SELECT *: a disabled account');
sql('ALTER TABLE mail.star DROP COLUMN note');
like(sam(), qr/^Auth-Status: .*CONTACTADMIN/m, 'a column dropped under the prepared SELECT *: still disabled');

# a BIT(1) enabled column: read as its number (before: the byte \x01 was "not a boolean", every
# login of such a table a temporary failure)
sub bits {
	my ($user) = @_;
	return auth_http('/auth-bits', 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => "$user-pw",
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '192.0.2.71');
}
like(bits('tom'), qr/^Auth-Status: OK\r$/m, 'BIT(1) enabled = 1: OK');
like(bits('tim'), qr/^Auth-Status: .*CONTACTADMIN/m, 'BIT(1) enabled = 0: disabled');

# networks and allow_nets both returned: the query is refused where a worker prepares it (before,
# the last one was taken: frank, kept to 10.0.0.0/8, logged in from anywhere)
like(auth_http('/auth-nets-twice', 'Auth-Method' => 'plain', 'Auth-User' => 'frank', 'Auth-Pass' => 'frank-pw',
	'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1'),
	qr/^Auth-Status: .*Temporary server problem/m, 'a restriction returned twice: a temporary failure, not the wider one');
like($t->read_file('error.log'), qr/\[error\].*invalid query: it returns the field of its column (\\x22|")allow_nets(\\x22|") twice/,
	'logged where the query was prepared');

# a lookup waits for a lock in the database: other logins and another location are answered
# meanwhile (the event loop is free), and the waiting one is answered when the lock goes
open my $locker, '|-', "mariadb --no-defaults -u root --socket=$my/sock -N -B > /dev/null"
	or die;
{ my $old = select $locker; $| = 1; select $old; }
print $locker "SELECT GET_LOCK('sloth', 60);\nsystem touch $d/locked\n";
$t->waitforfile("$d/locked") or die "no lock\n";

my $slow = Test::Nginx::IMAP->new();
$slow->read();
$slow->send('a01 LOGIN "sloth" "sloth-pw"');
ok(wait_for(10, sub { sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User lock'") =~ /^[1-9]/ }),
	'the slow lookup waits in the database');
my @quick = (imap_login('alice', 'alice-pw') =~ /^a01 OK/ ? 1 : 0, http_get('/ping') =~ /pong/ ? 1 : 0);
ok(!IO::Select->new($slow->socket())->can_read(0), 'slow login still pending');
is("@quick", '1 1', 'meanwhile a login and another location answered');
like(imap_login('sloth', 'sloth-pw', 8173), $temp, 'a lookup waiting past query_timeout: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*mysql "127\.0\.0\.1": .*timed out/, 'the timeout logged');
close $locker;
like($slow->read() // '', qr/^a01 OK/, 'lock released: the slow login answered');

# lookups abandoned at query_timeout are given up by the server too (max_statement_time): before,
# each stayed waiting on the lock after the module dropped its connection, and every later login
# opened another one, until the server ran out of connections
open $locker, '|-', "mariadb --no-defaults -u root --socket=$my/sock -N -B > /dev/null"
	or die;
{ my $old = select $locker; $| = 1; select $old; }
print $locker "SELECT GET_LOCK('sloth', 60);\nsystem touch $d/locked-again\n";
$t->waitforfile("$d/locked-again") or die "no lock\n";
my @sloths = map { Test::Nginx::IMAP->new(PeerAddr => '127.0.0.1:' . port(8173)) } 1 .. 3;
# (a named loop variable: the official lib's read() sets $_, which a for loop aliases)
for my $s (@sloths) { $s->read(); }
for my $s (@sloths) { $s->send('a01 LOGIN "sloth" "sloth-pw"'); }
my @answers;
for my $s (@sloths) { push @answers, $s->read() // ''; }
is(scalar(grep { $_ =~ $temp } @answers), 3, '3 lookups waiting past query_timeout: temporary failures');
my $waiting = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'mailauth' AND STATE = 'User lock'";
ok(wait_for(5, sub { sql($waiting) =~ /^0$/m }), 'no abandoned lookup left waiting on the lock in the server')
	or diag(sql("SELECT ID, COMMAND, TIME, STATE FROM information_schema.PROCESSLIST WHERE USER = 'mailauth'"));
close $locker;
like(imap_login('sloth', 'sloth-pw', 8173), qr/^a01 OK/, 'lock released: the short-timeout location answers');

# the server stopped mid-run: temporary failures (logged), then recovery without reload
# the example nginx-conf/mysql.conf as it is (ports moved to free ones, the test's server): a
# login through it
{
	my $e = run_example('mysql.conf', sub { ${$_[0]} =~ s/ port=\d+ / port=$myport / or die "no port= in the DSN" },
		files => { 'mailauth.pw' => "mail auth pw\n" }, users => { alice => 'alice-pw' });
	my ($rc, $out) = real_client('imap', '127.0.0.1', port(1143), 'alice', 'alice-pw');
	is($rc, 0, 'nginx-conf/mysql.conf: login (imaplib)') or diag($out, $e->read_file('error.log'));
	$e->stop();
	$e->stop_daemons();
}

my_stop();
like(imap_login('alice', 'alice-pw'), $temp, 'server stopped: temporary failure');
my_start() or die "mariadbd did not start again\n";
ok(wait_for(10, sub { imap_login('alice', 'alice-pw') =~ /^a01 OK/ }), 'server restarted: recovered');

my_stop();

###############################################################################

