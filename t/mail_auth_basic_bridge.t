#!/usr/bin/perl

# Tests for ngx-mail-auth: the Basic-credential bridge (no set_misc, no NDK). nginx mail logins
# checked by auth_basic (mail_auth_basic_header on) and by auth_request to an HTTP service that
# asserts the exact Authorization header it receives ($mail_auth_basic); 401 from the access
# phase becomes a proper auth_http failure with Auth-Wait.

###############################################################################

use warnings;
use strict;

use Test::More;
use MIME::Base64 qw/ encode_base64 /;
use Time::HiRes qw/ time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap http auth_basic auth_request proxy/);
workers_can_read($t);
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

my $d = $t->testdir();
my $utf8pw = "p\x{e4}ss w\x{f6}rd";
utf8::encode($utf8pw);
system('htpasswd', '-cbB', '-C', '5', "$d/htpasswd", 'alice', 'alice-secret') == 0 or die;
system('htpasswd', '-bm', "$d/htpasswd", 'utf', $utf8pw) == 0 or die;
system('htpasswd', '-cbB', '-C', '5', "$d/htpasswd-limited", 'alice', 'alice-secret') == 0 or die;

my $basic_alice = 'Basic ' . encode_base64('alice:alice-secret', '');
my $basic_carol = 'Basic ' . encode_base64('carol:carol 100%', '');

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

        location = /basic {
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 1s;
        }

        # its user file renamed away by the test: auth_basic answers 403 (ENOENT)
        location = /basic-limited {
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/htpasswd-limited;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 0s;
            mail_auth_limit zone=bridge_limit:1m ip=2/m ban=10m;
        }

        location = /request {
            mail_auth;
            mail_auth_basic_header on;
            auth_request /check;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 1s;
        }

        location = /check {
            internal;
            proxy_pass http://127.0.0.1:%%PORT_8181%%/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization $mail_auth_basic;
        }

        location = /var {
            return 200 "[$mail_auth_basic]";
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/basic;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:8145;
        protocol   imap;
        auth_http  127.0.0.1:8080/request;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log",
	alice => 'alice-secret', utf => $utf8pw, carol => 'carol 100%');
$t->run_daemon(\&MailAuthBackend::http_auth, port(8181), "$d/http-auth.log",
	$basic_alice, $basic_carol);
$t->run()->plan(20);
$t->waitforsocket('127.0.0.1:' . port(8144));
$t->waitforsocket('127.0.0.1:' . port(8181));

sub login {
	my ($port, $user, $pass) = @_;
	my $s = Test::Nginx::IMAP->new(PeerAddr => '127.0.0.1:' . port($port));
	$s->read();
	$s->send(qq{a01 LOGIN "$user" "$pass"});
	return $s->read() // '';
}

###############################################################################

# the variable: built from the unescaped Auth-User / Auth-Pass

like(http("GET /var HTTP/1.0\r\nAuth-User: alice\r\nAuth-Pass: alice-secret\r\n\r\n"),
	qr/\[\Q$basic_alice\E\]/, '$mail_auth_basic');
like(http("GET /var HTTP/1.0\r\nAuth-User: carol\r\nAuth-Pass: carol%20100%25\r\n\r\n"),
	qr/\[\Q$basic_carol\E\]/, '$mail_auth_basic unescapes space and %');
like(http("GET /var HTTP/1.0\r\nAuth-User: alice\r\n\r\n"), qr/\[\]/,
	'$mail_auth_basic empty without Auth-Pass');

# auth_basic via the header bridge, through nginx's mail proxy

like(login(8143, 'alice', 'alice-secret'), qr/^a01 OK/, 'auth_basic bridge: good password');
my $t0 = time();
my $bad = login(8143, 'alice', 'wrong');
like($bad, qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/, 'auth_basic bridge: bad password');
cmp_ok(time() - $t0, '>=', 0.9, 'auth_basic 401 answered with Auth-Wait');
like(login(8143, 'utf', $utf8pw), qr/^a01 OK/, 'auth_basic bridge: UTF-8 password (apr1)');
like($t->read_file('backend.log'), qr/^imap ok user=utf pass=\Q$utf8pw\E$/m,
	'backend got the UTF-8 password unchanged');
like(login(8143, 'al:ice', 'alice-secret'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'user name with ":" refused cleanly');
like($t->read_file('error.log'), qr/no Basic credentials for this request: user name contains ':'/,
	'":" refusal logged with the reason');

# the raw answer a 401 becomes: no WWW-Authenticate, Auth-Status + Auth-Wait

my $r = auth_http('/basic', 'Auth-Method' => 'plain', 'Auth-User' => 'alice',
	'Auth-Pass' => 'nope', 'Auth-Protocol' => 'smtp', 'Client-IP' => '127.0.0.1');
like($r, qr/^HTTP\/1\.[01] 200/, 'refusal is HTTP 200 for nginx mail');
like($r, qr/^Auth-Status: Invalid login or password\r\n(?s:.*)^Auth-Error-Code: 535 5\.7\.8\r$/m,
	'refusal carries Auth-Status and the SMTP code');
unlike($r, qr/WWW-Authenticate/i, 'no WWW-Authenticate leaks to nginx mail');

# the bridge's user file missing: auth_basic answers 403, which says nothing about the password:
# a temporary failure, not counted (before: "Invalid login or password", counted, and the
# client banned by the time the file was back)
rename("$d/htpasswd-limited", "$d/htpasswd-limited.away") or die "rename: $!";
my @gone = map { auth_http('/basic-limited', 'Auth-Method' => 'plain', 'Auth-User' => 'alice',
	'Auth-Pass' => 'alice-secret', 'Auth-Protocol' => 'imap', 'Client-IP' => '192.0.2.9') // '' } 1 .. 3;
is(scalar(grep { /^Auth-Status: (\[UNAVAILABLE\] )?Temporary server problem/m } @gone), 3,
	'user file missing: 3 right passwords, 3 temporary failures');
like($t->read_file('error.log'), qr/result=store-error reason="access phase answered HTTP 403, no verdict on the password/,
	'logged with the likely causes');
rename("$d/htpasswd-limited.away", "$d/htpasswd-limited") or die "rename: $!";
like(auth_http('/basic-limited', 'Auth-Method' => 'plain', 'Auth-User' => 'alice', 'Auth-Pass' => 'alice-secret',
	'Auth-Protocol' => 'imap', 'Client-IP' => '192.0.2.9'), qr/^Auth-Status: OK\r$/m,
	'the file back: the same client logs in (nothing was counted)');

# auth_request to an external HTTP service that checks the header it receives

like(login(8145, 'carol', 'carol 100%'), qr/^a01 OK/, 'auth_request: service accepted');
like($t->read_file('http-auth.log'), qr/^authorization=\Q$basic_carol\E$/m,
	'service received exactly Basic base64(user:pass)');
like(login(8145, 'carol', 'other'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/,
	'auth_request: service refusal (401) is a failed login');

$r = auth_http('/request', 'Auth-Method' => 'plain', 'Auth-User' => 'alice',
	'Auth-Pass' => 'alice-secret', 'Auth-Protocol' => 'imap', 'Client-IP' => '127.0.0.1');
like($r, qr/^Auth-Status: OK\r\n(?s:.*)^Auth-Port: \d+\r$/m, 'auth_request: OK with the backend');

###############################################################################
