#!/usr/bin/perl

# Tests for ngx-mail-auth: the PostgreSQL store (mail_auth_sql postgresql) through nginx's mail
# proxy, against a throwaway PostgreSQL cluster (initdb/pg_ctl in the test directory, loopback
# only, run as the "postgres" user when the test runs as root). nginx starts while the server is
# down (temporary failures, no refusal to start); then right/wrong password, unknown user,
# disabled account, per-user backend routing, protocol and network columns, failover past a dead
# first server, TLS with the server's certificate verified (and refused with another CA), a
# lookup blocked on a lock in the database while other logins and another location are answered,
# lookups abandoned at query_timeout given up by the server too (none left waiting on the lock),
# and the server stopped mid-run (temporary failures) and restarted (recovery without reload).

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Select;
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

my ($bin) = grep { -x "$_/initdb" && -x "$_/pg_ctl" } sort { $b cmp $a } glob('/usr/lib/postgresql/*/bin');
plan(skip_all => 'PostgreSQL server binaries not installed (postgresql package)') unless $bin;
plan(skip_all => 'psql not installed') unless have_tool('psql');
plan(skip_all => 'openssl not installed') unless have_tool('openssl');

my $t = Test::Nginx->new()->has(qw/mail imap pop3 http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
workers_can_read($t);

my $d = $t->testdir();
my $pg = "$d/pg";
my $pgport = port(8432);
$ENV{PGPASSWORD} = 'super-pw';    # psql, as the cluster's superuser

# PostgreSQL refuses to run as root: its files and processes belong to "postgres" then
my @owner;
if ($> == 0) {
	my @pw = getpwnam('postgres') or plan(skip_all => 'running as root without a "postgres" user');
	@owner = @pw[2, 3];
}

sub as_owner {
	my (@cmd) = @_;
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', "$d/pg-tools.log";
		open STDERR, '>&', \*STDOUT;
		if (@owner) {
			POSIX::setgid($owner[1]);
			POSIX::setuid($owner[0]) or POSIX::_exit(126);
		}
		{ no warnings qw/ exec /; exec { $cmd[0] } @cmd; }
		POSIX::_exit(127);
	}
	waitpid($pid, 0);
	return $? >> 8;
}

mkdir $pg or die;
chown @owner, $pg if @owner;
$t->write_file('pg-superuser.pw', "super-pw\n");
chmod 0644, "$d/pg-superuser.pw";
as_owner("$bin/initdb", '-D', "$pg/data", '-U', 'postgres', '--pwfile', "$d/pg-superuser.pw",
	'--auth-host=scram-sha-256', '--auth-local=trust', '--no-sync') == 0
	or die "initdb failed, see pg-tools.log\n";

# TLS: a server certificate for 127.0.0.1 from the test CA; another CA that did not sign it
make_server_cert($t);
make_client_cert($t, 'rogue', rogue => 1, name => 'rogue-ca');
for (qw/ server.crt server.key /) {
	system('cp', "$d/$_", "$pg/data/$_") == 0 or die;
	chown @owner, "$pg/data/$_" if @owner;
	chmod 0600, "$pg/data/$_";
}
open my $cf, '>>', "$pg/data/postgresql.conf" or die;
print $cf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n";
close $cf;

# the postmaster's pid while it runs: the cluster is stopped whatever happens (even when the
# test directory is gone already), the test's exit code kept
# (only in this process: not in the children that daemons fork)
my $postmaster;
my $test_pid = $$;
END {
	local $?;
	kill 'QUIT', $postmaster if $postmaster && $$ == $test_pid;
}

sub pg_start {
	my $ok = as_owner("$bin/pg_ctl", '-D', "$pg/data", '-l', "$pg/pg.log", '-w', '-t', '30',
		'-o', "-k $pg -p $pgport -h 127.0.0.1", 'start') == 0;
	if (open my $fh, '<', "$pg/data/postmaster.pid") {
		($postmaster) = <$fh> =~ /^(\d+)/;
	}
	return $ok;
}

sub pg_stop {
	my $ok = as_owner("$bin/pg_ctl", '-D', "$pg/data", '-m', 'immediate', '-w', 'stop') == 0;
	undef $postmaster if $ok;
	return $ok;
}

# psql as the superuser over TCP; its output
sub psql {
	my ($sql, $db) = @_;
	open my $fh, '-|', 'psql', '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
		'-p', $pgport, '-U', 'postgres', '-d', $db // 'mail', '-c', $sql or die "psql: $!\n";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	die "psql failed: $sql\n" if $?;
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
    mail_auth_sql postgresql "host=127.0.0.1,127.0.0.1 port=%%PORT_8433%%,%%PORT_8432%% user=mailauth dbname=mail"
                  password_file=%%TESTDIR%%/mailauth.pw connect_timeout=2s query_timeout=60s pool=2;
    mail_auth_sql_query "SELECT name, password, enabled, protocols, networks, server, port,
                                backend_user AS user
                         FROM users
                         WHERE name = :user
                           AND (NOT slow OR (SELECT true FROM pg_advisory_xact_lock_shared(42)))";

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
            mail_auth_sql postgresql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw ssl_ca=%%TESTDIR%%/ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-rogue-ca {
            mail_auth_sql postgresql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw ssl_ca=%%TESTDIR%%/rogue-ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-short {
            mail_auth_sql postgresql "host=127.0.0.1 port=%%PORT_8432%% user=mailauth dbname=mail"
                          password_file=%%TESTDIR%%/mailauth.pw query_timeout=1s;
            mail_auth;
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
}

EOF

my %backend = (alice => 'alice-pw', carol => 'info-pw', erin => 'erin-pw', sloth => 'sloth-pw');
$t->run_daemon(\&MailAuthBackend::imap, port(8145), "$d/backend-a.log", %backend);
$t->run_daemon(\&MailAuthBackend::imap, port(8146), "$d/backend-b.log", bob => 'bob-pw');
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/backend-a.log", %backend);

# the system's CAs as OpenSSL finds them include the CA that signed the server's certificate
# (SSL_CERT_FILE, read by nginx's master when the configuration makes the TLS context): ssl_ca
# must still be the only CA trusted, so the rogue-CA location keeps refusing (it logged in: the
# system's CAs were trusted beside ssl_ca, so any CA the system trusts vouched for the server)
$ENV{SSL_CERT_FILE} = "$d/ca.crt";

# nginx starts while PostgreSQL is down
$t->run()->plan(39);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8145, 8146, 8111;

my $temp = qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/;
my $refused = qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/;

###############################################################################

like(imap_login('alice', 'alice-pw'), $temp, 'server down at start: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*postgresql "127\.0\.0\.1,127\.0\.0\.1": cannot connect/,
	'server down logged');

pg_start() or die "pg_ctl start failed, see pg/pg.log\n";

my %h = map { $_ => make_hash('openssl-6', "$_-pw") // die "openssl passwd failed\n" }
	qw/ alice bob info dave erin frank sloth /;
my $b = port(8146);
psql('CREATE DATABASE mail', 'postgres');
psql(<<"SQL");
CREATE ROLE mailauth LOGIN PASSWORD 'mail auth pw';
CREATE TABLE users (name text PRIMARY KEY, password text, enabled boolean, protocols text,
	networks text, server text, port integer, backend_user text, slow boolean NOT NULL DEFAULT false);
GRANT SELECT ON users TO mailauth;
INSERT INTO users (name, password) VALUES ('alice', '$h{alice}'), ('info', '$h{info}'),
	('dave', '$h{dave}'), ('erin', '$h{erin}'), ('frank', '$h{frank}');
INSERT INTO users (name, password, server, port) VALUES ('bob', '$h{bob}', '127.0.0.1', $b);
INSERT INTO users (name, password, slow) VALUES ('sloth', '$h{sloth}', true);
UPDATE users SET backend_user = 'carol' WHERE name = 'info';
UPDATE users SET enabled = false WHERE name = 'dave';
UPDATE users SET protocols = 'pop3' WHERE name = 'erin';
UPDATE users SET networks = '10.0.0.0/8' WHERE name = 'frank';
SQL

ok(wait_for(10, sub { imap_login('alice', 'alice-pw') =~ /^a01 OK/ }),
	'server up: recovered without reload (past the dead first server)');
like($t->read_file('backend-a.log'), qr/^imap ok user=alice pass=alice-pw$/m, 'default backend reached');
like($t->read_file('error.log'), qr/\[info\].*postgresql .*usable again/, 'recovery logged');
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

# TLS to the server: verified with the CA that signed its certificate, refused with another
like(imap_login('alice', 'alice-pw', 8153), qr/^a01 OK/, 'TLS, server certificate verified');
like(psql("SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND usename = 'mailauth'"),
	qr/^[1-9]/, 'the connection is TLS');
like(imap_login('alice', 'alice-pw', 8163), $temp, 'TLS, certificate of another CA: temporary failure');

# a lookup waits for a lock in the database: other logins and another location are answered
# meanwhile (the event loop is free), and the waiting one is answered when the lock goes
open my $locker, "|-", "psql", "-X", "-q", "-o", "/dev/null", '-h', '127.0.0.1', '-p', $pgport, '-U', 'postgres', '-d', 'mail'
	or die;
{ my $old = select $locker; $| = 1; select $old; }
print $locker "SELECT pg_advisory_lock(42);\n\\! touch $d/locked\n";
$t->waitforfile("$d/locked") or die "no lock\n";

my $slow = Test::Nginx::IMAP->new();
$slow->read();
$slow->send('a01 LOGIN "sloth" "sloth-pw"');
ok(wait_for(10, sub { psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") =~ /^[1-9]/ }),
	'the slow lookup waits in the database');
my @quick = (imap_login('alice', 'alice-pw') =~ /^a01 OK/ ? 1 : 0, http_get('/ping') =~ /pong/ ? 1 : 0);
ok(!IO::Select->new($slow->socket())->can_read(0), 'slow login still pending');
is("@quick", '1 1', 'meanwhile a login and another location answered');
like(imap_login('sloth', 'sloth-pw', 8173), $temp, 'a lookup waiting past query_timeout: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*postgresql "127\.0\.0\.1": .*timed out/, 'the timeout logged');
close $locker;
like($slow->read() // '', qr/^a01 OK/, 'lock released: the slow login answered');

# lookups abandoned at query_timeout are given up by the server too (statement_timeout): before,
# each stayed waiting on the lock after the module dropped its connection, and every later login
# opened another one, until the server ran out of connections
open $locker, "|-", "psql", "-X", "-q", "-o", "/dev/null", '-h', '127.0.0.1', '-p', $pgport, '-U', 'postgres', '-d', 'mail'
	or die;
{ my $old = select $locker; $| = 1; select $old; }
print $locker "SELECT pg_advisory_lock(42);\n\\! touch $d/locked-again\n";
$t->waitforfile("$d/locked-again") or die "no lock\n";
my @sloths = map { Test::Nginx::IMAP->new(PeerAddr => '127.0.0.1:' . port(8173)) } 1 .. 3;
# (a named loop variable: the official lib's read() sets $_, which a for loop aliases)
for my $s (@sloths) { $s->read(); }
for my $s (@sloths) { $s->send('a01 LOGIN "sloth" "sloth-pw"'); }
my @answers;
for my $s (@sloths) { push @answers, $s->read() // ''; }
is(scalar(grep { $_ =~ $temp } @answers), 3, '3 lookups waiting past query_timeout: temporary failures');
my $waiting = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mailauth' AND wait_event_type = 'Lock'";
ok(wait_for(5, sub { psql($waiting) =~ /^0$/m }), 'no abandoned lookup left waiting on the lock in the server')
	or diag(psql("SELECT pid, state, wait_event_type, query_start FROM pg_stat_activity WHERE usename = 'mailauth'"));
close $locker;
like(imap_login('sloth', 'sloth-pw', 8173), qr/^a01 OK/, 'lock released: the short-timeout location answers');

# the server stopped mid-run: temporary failures (logged), then recovery without reload
pg_stop() or die "pg_ctl stop failed\n";
like(imap_login('alice', 'alice-pw'), $temp, 'server stopped: temporary failure');
pg_start() or die "pg_ctl start failed\n";
ok(wait_for(10, sub { imap_login('alice', 'alice-pw') =~ /^a01 OK/ }), 'server restarted: recovered');

# the example nginx-conf/postgresql.conf as it is (ports moved to free ones, the test's server): a
# login through it
{
	my $e = run_example('postgresql.conf', sub { ${$_[0]} =~ s/ port=\d+ / port=$pgport / or die "no port= in the DSN" },
		files => { 'mailauth.pw' => "mail auth pw\n" }, users => { alice => 'alice-pw' });
	my ($rc, $out) = real_client('imap', '127.0.0.1', port(1143), 'alice', 'alice-pw');
	is($rc, 0, 'nginx-conf/postgresql.conf: login (imaplib)') or diag($out, $e->read_file('error.log'));
	$e->stop();
	$e->stop_daemons();
}

# nginx -t: an unknown query parameter, an unknown option, a DSN the client does not understand
my $nt = sub { nginx_t_with($t, @_) };
my ($code, $msg) = $nt->(qr/WHERE name = :user/, 'WHERE name = :usr');
ok($code != 0 && $msg =~ /unknown parameter ":usr"/, 'nginx -t: unknown query parameter') or diag($msg);
($code, $msg) = $nt->(qr/ pool=2;/, ' pools=2;');
ok($code != 0 && $msg =~ /unknown option "pools=2"/, 'nginx -t: unknown option') or diag($msg);
($code, $msg) = $nt->(qr/user=mailauth dbname=mail"\s+password_file/, 'user=mailauth dbname=mail sslmode=require" password_file');
ok($code != 0 && $msg =~ /sslmode=require needs ssl_ca/, 'nginx -t: sslmode=require without ssl_ca') or diag($msg);
($code, $msg) = $nt->(qr/location = \/auth-short \{/, "location = /auth-short {\n            mail_auth_thread_pool off;");
ok($code != 0 && $msg =~ /"mail_auth_sql" needs a thread pool/, 'nginx -t: no thread pool') or diag($msg);
# bearer tokens: the database server matches names by its own rules (LDAP's caseIgnoreMatch takes a
# fullwidth "\x{ff41}lice" for alice): a token naming such a spelling would open another mailbox
$t->write_file('oauth.secret', "s\n");
($code, $msg) = $nt->(qr/location = \/auth-short \{/, "location = /auth-short {\n            "
	. "mail_auth_oauth2 introspect=http://127.0.0.1:1/i client_id=m client_secret_file=$d/oauth.secret;");
ok($code != 0 && $msg =~ /"mail_auth_oauth2" needs a store of the mailboxes/, 'nginx -t: no bearer tokens on this store')
	or diag($msg);

pg_stop();

###############################################################################

