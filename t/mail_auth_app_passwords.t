#!/usr/bin/perl

# Tests for ngx-mail-auth: app passwords (per-device credentials) through nginx's mail proxy,
# with real clients (Python imaplib, poplib, smtplib), created and revoked with the real
# mail-auth-user tool, in both stores:
#   - passwd-file (mail_auth_app_passwords FILE): the main password and app passwords both log
#     in; an app password limited to smtp is refused for imap; one limited to 127.0.0.1 is
#     refused from 127.0.0.2; an account with app_only=imap has its main password refused for
#     IMAP (its app password works there, its main password on SMTP); revocation is seen
#     without a reload, also for a bcrypt app password whose verdict is in mail_auth_cache
#     (ttl 1h); the decision line names the credential's label, never the secret;
#   - SQLite (mail_auth_sqlite_app_query default): the same with the global
#     mail_auth_app_only pop3; a revocation is refused at the very next login (no polling),
#     cached verdict or not;
#   - nginx -t: the default app query passes; an app query without a password column, an app
#     file with a SQLite store and a missing app file are refused.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 smtp http/);
workers_can_read($t);

my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";
plan(skip_all => "mail-auth-user not built ($tool)") unless -x $tool;
plan(skip_all => 'python3 not installed') unless have_tool('python3');

my $d = $t->testdir();

# mail-auth-user; dies unless it succeeds; returns its output
sub tool {
	my ($rc, $out) = run_tool($tool, @_);
	die "mail-auth-user @_: $out" if $rc != 0;
	return $out;
}

# app add: the secret printed once (one line)
sub app_add {
	my $out = tool(@_);
	$out =~ /\A([a-z2-9]{4}(?:-[a-z2-9]{4}){6})\n\z/ or die "app add printed: $out";
	return $1;
}

my @file = ('--passwd-file', "$d/users", '--app-passwords', "$d/apps");
my @sql = ('--sqlite', "$d/users.db");

tool(@file, 'add', 'alice', '--password', 'alice main pw', '--cost', '4');
tool(@file, 'add', 'carol', '--password', 'carol main pw', '--scheme', 'ssha512');
# carol's main password is for SMTP only: app_only=imap (a Dovecot-style extra field)
my $users = $t->read_file('users');
$users =~ s/^(carol:[^\n]*)$/$1::::::app_only=imap/m or die "no carol line\n";
$t->write_file('users', $users);

my %app;
$app{phone} = app_add(@file, 'app', 'add', 'alice', 'phone');
$app{mailer} = app_add(@file, 'app', 'add', 'alice', 'mailer', '--protocols', 'smtp');
$app{lan} = app_add(@file, 'app', 'add', 'alice', 'lan', '--networks', '127.0.0.1');
$app{laptop} = app_add(@file, 'app', 'add', 'alice', 'laptop', '--scheme', 'bcrypt', '--cost', '4');
$app{tablet} = app_add(@file, 'app', 'add', 'carol', 'tablet');

# (the tool keeps a file's mode when it rewrites it; the workers may not run as its owner)
chmod 0644, "$d/users", "$d/apps" or die "chmod: $!\n";

tool(@sql, 'init');
chmod 0644, "$d/users.db" or die "chmod: $!\n";
tool(@sql, 'add', 'dave', '--password', 'dave main pw', '--cost', '4');
$app{dphone} = app_add(@sql, 'app', 'add', 'dave', 'dphone');
$app{dlaptop} = app_add(@sql, 'app', 'add', 'dave', 'dlaptop', '--scheme', 'bcrypt', '--cost', '4');

# a store whose app passwords file holds one line: revoking it empties the file
my @solo = ('--passwd-file', "$d/users-solo", '--app-passwords', "$d/apps-solo");
tool(@solo, 'add', 'sol', '--password', 'sol main pw', '--cost', '4');
$app{solo} = app_add(@solo, 'app', 'add', 'sol', 'phone', '--scheme', 'bcrypt', '--cost', '4');
chmod 0644, "$d/users-solo", "$d/apps-solo" or die "chmod: $!\n";

# another store with an alice of its own (another person: another password)
$t->write_file('users-other', 'alice:' . make_hash('openssl-6', 'the other alice pw') . "\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_cache zone=verdicts:1m ttl=1h negative_ttl=1h;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_app_passwords %%TESTDIR%%/apps;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_backend smtp 127.0.0.1:%%PORT_8026%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-solo {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users-solo;
            mail_auth_app_passwords %%TESTDIR%%/apps-solo;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-sql {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/users.db;
            mail_auth_sqlite_app_query default;
            mail_auth_app_only pop3;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_fail_wait 0;
        }
    }

    # a server-level passwd-file with its app passwords, and a location with a passwd-file of
    # its own that has an alice too: the app passwords file stays with the store it was given with
    server {
        listen       127.0.0.1:8081;
        server_name  localhost;
        mail_auth_passwd_file %%TESTDIR%%/users;
        mail_auth_app_passwords %%TESTDIR%%/apps;
        mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
        mail_auth_fail_wait 0;

        location = /inherited {
            mail_auth;
        }

        location = /other-store {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users-other;
        }
    }
}

mail {
    server {
        listen     127.0.0.1:8143;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth;
    }

    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  plain login;
        auth_http  127.0.0.1:8080/auth;
    }

    server {
        listen     127.0.0.1:8144;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-sql;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
        pop3_auth  plain;
        auth_http  127.0.0.1:8080/auth-sql;
    }
}

EOF

my $log = "$d/backend.log";
my %any = (alice => '*', carol => '*', dave => '*', erin => '*', frank => '*');
$t->run_daemon(\&MailAuthBackend::imap, port(8145), $log, %any);
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), $log, %any);
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), $log, %any);
$t->run()->plan(54);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8145, 8026, 8111;

# (exit code, output) of a real client: 0 logged in, 1 refused
sub client {
	my ($proto, $port, $user, $pass, $source) = @_;
	local $ENV{MAIL_CLIENT_SOURCE} = $source // '127.0.0.1';
	return real_client($proto, '127.0.0.1', port($port), $user, $pass);
}

sub ok_login {
	my ($rc, $out) = client(@_);
	return $rc == 0 ? 1 : do { diag("@_[0..2]: $out"); 0 };
}

# refused as a failed login (not a temporary failure)
sub refused {
	my ($rc, $out) = client(@_);
	return $rc == 1 && $out !~ /Temporary/ ? 1 : do { diag("@_[0..2]: $out"); 0 };
}

# the decision lines since the last call
my $seen = 0;
sub new_lines {
	open my $fh, '<', "$d/error.log" or die "error.log: $!\n";
	my $all = do { local $/; <$fh> };
	my $new = substr($all, $seen);
	$seen = length $all;
	return join "\n", grep { /mail_auth: user=/ } split /\n/, $new;
}

###############################################################################

# the app passwords file belongs to its passwd-file: a location that names another store does not
# inherit it (the first store's alice's app password logged in the other store's alice)
sub plain_8081 {
	my ($uri, $user, $pass) = @_;
	my $r = http("GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: $user\r\n"
		. "Auth-Pass: $pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n\r\n",
		socket => IO::Socket::INET->new(Proto => 'tcp', PeerAddr => '127.0.0.1:' . port(8081)));
	return ($r =~ /^Auth-Status: (.*?)\r?$/m)[0] // "no Auth-Status: $r";
}
is(plain_8081('/inherited', 'alice', $app{phone}), 'OK', 'store and app passwords inherited together: app password OK');
like(plain_8081('/other-store', 'alice', $app{phone}), qr/Invalid login/,
	'another store in the location: the enclosing store\'s app passwords not taken');
is(plain_8081('/other-store', 'alice', 'the other alice pw'), 'OK', '... its own alice logs in');

# passwd-file

ok(ok_login('imap', 8143, 'alice', 'alice main pw'), 'main password: imap');
ok(ok_login('imap', 8143, 'alice', $app{phone}), 'app password: imap');
like(new_lines(), qr/user="alice".*result=ok reason="backend [^"]*\(app password 'phone'\)"/,
	'the decision line names the app password');
ok(ok_login('smtp', 8025, 'alice', $app{phone}), 'app password: smtp');

ok(ok_login('smtp', 8025, 'alice', $app{mailer}), 'smtp-only app password: smtp');
ok(refused('imap', 8143, 'alice', $app{mailer}), 'smtp-only app password: imap refused');
like(new_lines(), qr/result=protocol-denied reason="app password 'mailer': protocol imap not allowed/,
	'refusal logged with the label');

ok(ok_login('imap', 8143, 'alice', $app{lan}, '127.0.0.1'), 'app password for 127.0.0.1: from there');
ok(refused('imap', 8143, 'alice', $app{lan}, '127.0.0.2'), 'app password for 127.0.0.1: from 127.0.0.2 refused');
like(new_lines(), qr/client=127\.0\.0\.2 .*result=network-denied reason="app password 'lan'/,
	'network refusal logged');

ok(refused('imap', 8143, 'carol', 'carol main pw'), 'app_only=imap: main password refused for imap');
like(new_lines(), qr/user="carol".*result=protocol-denied reason="main password not accepted for imap/,
	'main password refusal logged');
# the right main password is not confirmed to a guesser there: the answer of a wrong password
{
	my (undef, $o) = client('imap', 8143, 'carol', 'carol main pw');
	like($o, qr/^FAIL .*\[AUTHENTICATIONFAILED\] Invalid login or password/,
		'app_only=imap: the main password answers as a wrong one (no [CONTACTADMIN])');
	like(new_lines(), qr/user="carol".*result=protocol-denied/, 'that refusal is app_only\'s');
}
ok(ok_login('imap', 8143, 'carol', $app{tablet}), 'app_only=imap: app password works for imap');
ok(ok_login('smtp', 8025, 'carol', 'carol main pw'), 'app_only=imap: main password works for smtp');

ok(refused('imap', 8143, 'alice', 'not-' . $app{phone}), 'a wrong password is refused');
ok(refused('imap', 8143, 'carol', $app{phone}), 'another user\'s app password is refused');

# revocation: seen without a reload, a cached verdict (bcrypt, ttl 1h) included

ok(ok_login('imap', 8143, 'alice', $app{laptop}), 'bcrypt app password');
ok(ok_login('imap', 8143, 'alice', $app{laptop}), 'bcrypt app password again');
like(new_lines(), qr/\(app password 'laptop'\) \(cached verdict\)"/, 'its verdict came from the cache');
# (phone first: once laptop's revocation, the later write, is seen, phone's is too)
tool(@file, 'app', 'revoke', 'alice', 'phone');
tool(@file, 'app', 'revoke', 'alice', 'laptop');
ok(wait_for(5, sub { (client('imap', 8143, 'alice', $app{laptop}))[1] =~ /^FAIL.*Invalid login/ }),
	'revoked (cached) app password refused');
ok(refused('imap', 8143, 'alice', $app{phone}), 'revoked app password refused');
ok(ok_login('imap', 8143, 'alice', 'alice main pw'), 'the main password still works');
like(tool(@file, 'app', 'list', 'alice'), qr/\Amailer\tprotocols=smtp\tnetworks=any\tcreated=\S+\nlan\t/,
	'app list: what is left, no hashes');

# the file's last app password revoked: the file left empty is taken at the next check (within
# a second), as any other change; an emptied users file is held for 2 s (a rewrite in place
# caught empty), and so was this one: the revoked password, its verdict cached, logged in for
# 2-3 s more

sub solo {
	my $r = auth_http('/auth-solo', 'Auth-Method' => 'plain', 'Auth-User' => 'sol', 'Auth-Pass' => $_[0],
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1') // '';
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}
is(solo($app{solo}) . ',' . solo($app{solo}), 'OK,OK', 'the only app password of its file, twice (cached)');
tool(@solo, 'app', 'revoke', 'sol', 'phone');
my $t0 = time();
wait_for(5, sub { solo($app{solo}) ne 'OK' });
my $took = time() - $t0;
is(-s "$d/apps-solo", 0, 'the app passwords file is empty');
ok($took < 1.9, sprintf('the last app password revoked: refused %.1f s after (within the 1 s check, not the 2 s an emptied file was held)', $took));

# SQLite, with mail_auth_app_only pop3

ok(ok_login('imap', 8144, 'dave', 'dave main pw'), 'sqlite: main password: imap');
ok(ok_login('imap', 8144, 'dave', $app{dphone}), 'sqlite: app password: imap');
ok(refused('pop3', 8110, 'dave', 'dave main pw'), 'sqlite: mail_auth_app_only pop3: main password refused');
ok(ok_login('pop3', 8110, 'dave', $app{dphone}), 'sqlite: app password: pop3');
ok(ok_login('imap', 8144, 'dave', $app{dlaptop}) && ok_login('imap', 8144, 'dave', $app{dlaptop}),
	'sqlite: bcrypt app password, twice');
like(new_lines(), qr/user="dave".*\(app password 'dlaptop'\) \(cached verdict\)"/,
	'sqlite: ... the second from the cache');
tool(@sql, 'app', 'revoke', 'dave', 'dlaptop');
tool(@sql, 'app', 'revoke', 'dave', 'dphone');
ok(refused('imap', 8144, 'dave', $app{dlaptop}), 'sqlite: revoked (cached) app password refused at once');
ok(refused('pop3', 8110, 'dave', $app{dphone}), 'sqlite: revoked app password refused at once');

###############################################################################

# an account deleted another way than 'mail-auth-user del' (plain SQL, htpasswd -D) and made
# again by 'mail-auth-user add': the earlier account's app passwords are removed by the add, not
# inherited by the new owner (the module finds app passwords by name: the former holder's phone
# password opened the new account)

SKIP: {
	skip 'sqlite3 not installed', 5 unless have_tool('sqlite3');
	tool(@sql, 'add', 'erin', '--password', 'old erin pw', '--cost', '4');
	my $phone = app_add(@sql, 'app', 'add', 'erin', 'phone');
	ok(ok_login('imap', 8144, 'erin', $phone), 'sqlite: the first erin\'s app password');
	my ($rc, $out) = run_tool('sqlite3', "$d/users.db", "DELETE FROM users WHERE name = 'erin'");
	is($rc, 0, 'sqlite: erin deleted with plain SQL') or diag($out);
	$out = tool(@sql, 'add', 'erin', '--password', 'new erin pw', '--cost', '4');
	like($out, qr/removed 1 app password of an earlier account "erin"/, 'sqlite: add says it removed the leftover');
	ok(refused('imap', 8144, 'erin', $phone), 'sqlite: the new erin does not inherit the app password');
	ok(ok_login('imap', 8144, 'erin', 'new erin pw'), 'sqlite: the new erin logs in');
}

{
	tool(@file, 'add', 'frank', '--password', 'old frank pw', '--cost', '4');
	my $phone = app_add(@file, 'app', 'add', 'frank', 'phone');
	ok(wait_for(5, sub { (client('imap', 8143, 'frank', $phone))[0] == 0 }), 'passwd-file: the first frank\'s app password');
	# as htpasswd -D does it: the line removed, the file rewritten in place
	my $u = $t->read_file('users');
	$u =~ s/^frank:[^\n]*\n//m or die "no frank line\n";
	$t->write_file('users', $u);
	my $out = tool(@file, 'add', 'frank', '--password', 'new frank pw', '--cost', '4');
	like($out, qr/removed 1 app password of an earlier account "frank"/, 'passwd-file: add says it removed the leftover');
	unlike($t->read_file('apps'), qr/^frank:/m, 'passwd-file: no app password of frank left');
	ok(wait_for(5, sub { (client('imap', 8143, 'frank', 'new frank pw'))[0] == 0 }), 'passwd-file: the new frank logs in');
	ok(wait_for(5, sub { my ($rc, $o) = client('imap', 8143, 'frank', $phone); $rc == 1 && $o !~ /Temporary/ }),
		'passwd-file: the new frank does not inherit the app password');
}

###############################################################################

# nginx -t checks the app passwords configuration

sub nginx_t {
	my ($location) = @_;
	open my $fh, '>', "$d/check.conf" or die "check.conf: $!\n";
	print $fh <<"EOC";
@{[ $ENV{TEST_NGINX_GLOBALS} // "" ]}
pid check.pid;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:1;
        location = /auth {
            mail_auth;
            mail_auth_backend imap 127.0.0.1:1;
            $location
        }
    }
}
EOC
	close $fh;
	my ($rc, $out) = run_tool($Test::Nginx::NGINX, '-t', '-q', '-p', "$d/", '-c', 'check.conf', '-e', 'check.log');
	return $rc == 0 ? 'ok' : $out;
}

is(nginx_t("mail_auth_sqlite $d/users.db; mail_auth_sqlite_app_query default;"), 'ok',
	'nginx -t: the default app query');
like(nginx_t("mail_auth_sqlite $d/users.db; mail_auth_sqlite_app_query \"SELECT label FROM app_passwords WHERE user = :user\";"),
	qr/mail_auth_sqlite_app_query.*"password" column/, 'nginx -t: an app query without a password column');
like(nginx_t("mail_auth_sqlite $d/users.db; mail_auth_app_passwords $d/apps;"),
	qr/"mail_auth_app_passwords" is a file for "mail_auth_passwd_file"/, 'nginx -t: an app file with SQLite');
like(nginx_t("mail_auth_passwd_file $d/users; mail_auth_app_passwords $d/no-such-file;"),
	qr/mail_auth_app_passwords: app passwords file .*no-such-file/, 'nginx -t: a missing app file');

###############################################################################

# the secrets never reach the log
my $all = $t->read_file('error.log');
my @leaked = grep { index($all, $app{$_}) >= 0 } sort keys %app;
is("@leaked", '', 'no secret in the error log');

###############################################################################
