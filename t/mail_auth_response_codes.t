#!/usr/bin/perl

# Tests for ngx-mail-auth: the response codes mail clients see in a refusal, through nginx's
# mail proxy with real clients (imaplib, poplib, smtplib): a wrong password is IMAP
# "NO [AUTHENTICATIONFAILED]", POP3 "-ERR [AUTH]", SMTP "535 5.7.8"; a broken store is IMAP
# "NO [UNAVAILABLE]", POP3 "-ERR [SYS/TEMP]", SMTP "451 4.3.0" (RFC 5530, RFC 3206, RFC 3463),
# so that a client asks for a new password only when the password was wrong; a disabled account
# with its right password is IMAP "[CONTACTADMIN]", with a wrong one what any wrong password gets.
# And Auth-Wait after a refused APOP/CRAM-MD5 login (CVE-2026-27651): this nginx (1.28.3) keeps
# the usual wait and the session; "mail_auth_nginx_auth_wait_fixed off" answers "Auth-Wait: 0",
# so nginx closes the session.

###############################################################################

use warnings;
use strict;

use Test::More;
use Digest::MD5 qw/ md5_hex /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::POP3;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 smtp http/);
workers_can_read($t);
plan(skip_all => 'python3 with imaplib/poplib/smtplib not installed')
	unless system('python3 -c "import imaplib, poplib, smtplib" 2>/dev/null') == 0;

my $users = "alice:{PLAIN}alice-pw\ndave:{PLAIN}dave-pw::::::nologin\n";
$t->write_file('users', $users);
$t->write_file('users-gone', $users);

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
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8201%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8202%%;
            mail_auth_backend smtp 127.0.0.1:%%PORT_8203%%;
            mail_auth_fail_wait 1s;
        }

        # its file is removed once nginx runs: a broken store
        location = /broken {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users-gone;
            mail_auth_backend imap 127.0.0.1:%%PORT_8201%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8202%%;
            mail_auth_backend smtp 127.0.0.1:%%PORT_8203%%;
            mail_auth_fail_wait 0;
        }

        # as on an nginx without the CVE-2026-27651 fix
        location = /unpatched {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8202%%;
            mail_auth_fail_wait 1s;
            mail_auth_nginx_auth_wait_fixed off;
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
        pop3_auth  plain apop;
    }

    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  plain login;
    }

    server {
        listen     127.0.0.1:8144;
        protocol   imap;
        auth_http  127.0.0.1:8080/broken;
    }

    server {
        listen     127.0.0.1:8111;
        protocol   pop3;
        auth_http  127.0.0.1:8080/broken;
    }

    server {
        listen     127.0.0.1:8026;
        protocol   smtp;
        smtp_auth  plain login;
        auth_http  127.0.0.1:8080/broken;
    }

    server {
        listen     127.0.0.1:8112;
        protocol   pop3;
        pop3_auth  plain apop;
        auth_http  127.0.0.1:8080/unpatched;
    }
}

EOF

my $log = $t->testdir() . '/backend.log';
$t->run_daemon(\&MailAuthBackend::imap, port(8201), $log, alice => 'alice-pw');
$t->run_daemon(\&MailAuthBackend::pop3, port(8202), $log, alice => 'alice-pw');
$t->run_daemon(\&MailAuthBackend::smtp, port(8203), $log, alice => 'alice-pw');
$t->run()->plan(27);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8201, 8202, 8203;

###############################################################################

sub client {
	my ($proto, $port, $user, $pass) = @_;
	return real_client($proto, '127.0.0.1', port($port), $user, $pass);
}

# wrong credentials: the client should ask for a new password

my ($rc, $out) = client('imap', 8143, 'alice', 'alice-pw');
is($rc, 0, 'imap: the right password logs in') or diag($out);
($rc, $out) = client('imap', 8143, 'alice', 'wrong');
like($out, qr/^FAIL .*'\[AUTHENTICATIONFAILED\] Invalid login or password'/, 'imap: wrong password')
	or diag($out);
($rc, $out) = client('imap', 8143, 'mallory', 'wrong');
like($out, qr/^FAIL .*'\[AUTHENTICATIONFAILED\] Invalid login or password'/, 'imap: unknown user')
	or diag($out);
($rc, $out) = client('pop3', 8110, 'alice', 'wrong');
like($out, qr/^FAIL .*'-ERR \[AUTH\] Invalid login or password'/, 'pop3: wrong password') or diag($out);
($rc, $out) = client('smtp', 8025, 'alice', 'wrong');
like($out, qr/^FAIL 535 b'5\.7\.8 Invalid login or password'/, 'smtp: wrong password, 535 5.7.8')
	or diag($out);

# a disabled account: "ask the admin" only to whoever knows its password

($rc, $out) = client('imap', 8143, 'dave', 'dave-pw');
like($out, qr/^FAIL .*'\[CONTACTADMIN\] /, 'imap: disabled account, right password: CONTACTADMIN')
	or diag($out);
($rc, $out) = client('imap', 8143, 'dave', 'wrong');
like($out, qr/^FAIL .*'\[AUTHENTICATIONFAILED\] Invalid login or password'/,
	'imap: disabled account, wrong password: what any wrong password gets') or diag($out);
($rc, $out) = client('pop3', 8110, 'dave', 'dave-pw');
like($out, qr/^FAIL .*'-ERR \[AUTH\] /, 'pop3: disabled account: AUTH (RFC 3206 has no other)')
	or diag($out);
($rc, $out) = client('smtp', 8025, 'dave', 'dave-pw');
like($out, qr/^FAIL 535 b'5\.7\.8 Invalid login or password'/, 'smtp: disabled account: 535 5.7.8')
	or diag($out);

# a broken store: a temporary failure, the client should retry, not ask for a password

unlink($t->testdir() . '/users-gone') or die "unlink: $!\n";
my $answer = sub { (client('imap', 8144, 'alice', 'alice-pw'))[1] };
ok(wait_for(5, sub { $answer->() =~ /\[UNAVAILABLE\]/ }), 'imap: store removed, a temporary failure');
($rc, $out) = client('imap', 8144, 'alice', 'alice-pw');
like($out, qr/^FAIL .*'\[UNAVAILABLE\] Temporary server problem, try again later'/,
	'imap: broken store: NO [UNAVAILABLE]') or diag($out);
($rc, $out) = client('imap', 8144, 'alice', 'wrong');
like($out, qr/^FAIL .*'\[UNAVAILABLE\] /, 'imap: broken store, any password: UNAVAILABLE') or diag($out);
($rc, $out) = client('pop3', 8111, 'alice', 'alice-pw');
like($out, qr/^FAIL .*'-ERR \[SYS\/TEMP\] Temporary server problem, try again later'/,
	'pop3: broken store: -ERR [SYS/TEMP]') or diag($out);
($rc, $out) = client('smtp', 8026, 'alice', 'alice-pw');
like($out, qr/^FAIL 451 b'4\.3\.0 Temporary server problem, try again later'/,
	'smtp: broken store: 451 4.3.0') or diag($out);
like($t->read_file('error.log'), qr/\[error\].*users-gone: cannot stat/, 'the broken store is logged');

# CVE-2026-27651: Auth-Wait after a refused APOP/CRAM-MD5 login

my %cram = ('Auth-Method' => 'cram-md5', 'Auth-User' => 'alice', 'Auth-Pass' => '0' x 32,
	'Auth-Salt' => '<1.2@localhost>', 'Auth-Protocol' => 'imap', 'Client-IP' => '127.0.0.1');
my %apop = (%cram, 'Auth-Method' => 'apop', 'Auth-Protocol' => 'pop3');
my %plain = (%cram, 'Auth-Method' => 'plain', 'Auth-Pass' => 'wrong');
delete $plain{'Auth-Salt'};
like(auth_http('/auth', %cram), qr/^Auth-Wait: 1\r$/m, 'nginx 1.28.3: refused CRAM-MD5 keeps its Auth-Wait');
like(auth_http('/auth', %apop), qr/^Auth-Wait: 1\r$/m, 'nginx 1.28.3: refused APOP keeps its Auth-Wait');
like(auth_http('/unpatched', %cram), qr/^Auth-Wait: 0\r$/m, 'declared unpatched: refused CRAM-MD5, Auth-Wait 0');
like(auth_http('/unpatched', %apop), qr/^Auth-Wait: 0\r$/m, 'declared unpatched: refused APOP, Auth-Wait 0');
like(auth_http('/unpatched', %plain), qr/^Auth-Wait: 1\r$/m, 'declared unpatched: other methods keep it');
# such an nginx forgets the password of every method but PLAIN once the session has a salt (a
# CRAM-MD5 challenge asked before), and sends Auth-Salt then: LOGIN (Auth-Method plain),
# XOAUTH2/OAUTHBEARER (freenginx 1.27.1), SMTP's relay check (none); a client then crashed the
# worker with CRAM-MD5 after such a refusal if it kept the session
for my $m ([ 'plain', 'imap', 'wrong' ], [ 'xoauth2', 'imap', 'x' x 32 ], [ 'none', 'smtp', '' ]) {
	my %salted = (%cram, 'Auth-Method' => $m->[0], 'Auth-Protocol' => $m->[1], 'Auth-Pass' => $m->[2]);
	$salted{'Auth-SMTP-From'} = 'MAIL FROM:<a@elsewhere.example>' if $m->[0] eq 'none';
	$salted{'Auth-SMTP-To'} = 'RCPT TO:<b@elsewhere.example>' if $m->[0] eq 'none';
	like(auth_http('/unpatched', %salted), qr/^Auth-Wait: 0\r$/m,
		"declared unpatched: a refused $m->[0] ($m->[1]) request with Auth-Salt, Auth-Wait 0");
}

# through nginx: after a refused APOP the session goes on (this nginx), or is closed

sub apop_refused {
	my ($port) = @_;
	my $s = Test::Nginx::POP3->new(PeerAddr => '127.0.0.1:' . port($port));
	my ($salt) = ($s->read() // '') =~ /(<[^>]+>)/;
	$s->send('APOP alice ' . md5_hex($salt . 'not-alice-pw'));
	my $refusal = $s->read() // '';
	$s->send('QUIT');
	return ($refusal, $s->read());
}

my ($refusal, $next) = apop_refused(8110);
like($refusal, qr/^-ERR \[AUTH\] Invalid login or password/, 'apop: refused');
like($next // 'closed', qr/^\+OK/, 'apop refused on nginx 1.28.3: the session goes on');
($refusal, $next) = apop_refused(8112);
ok(!defined $next, 'apop refused, declared unpatched: nginx closed the session');

like($t->read_file('error.log'),
	qr/\[notice\].*mail_auth: refused APOP\/CRAM-MD5 logins get the usual Auth-Wait \(the build: nginx\/1\.28\.3 .*has the CVE-2026-27651 fix/,
	'the configuration-time line says which behaviour is in force');

###############################################################################
