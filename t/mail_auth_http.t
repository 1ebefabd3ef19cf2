#!/usr/bin/perl

# Tests for ngx-mail-auth: the auth_http answers themselves, as nginx mail would request them
# (exact Auth-* headers, backends per protocol incl. IPv6, SMTP error codes), and hostile or
# malformed requests: each gets a safe answer and a log line, nothing is echoed unvalidated,
# and nginx keeps running.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);

$t->write_file('users', "alice:{PLAIN}secret\n"
	. "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"
	. "broken:{NOSUCHSCHEME}abc\n"
	. "no colon on this line\n"
	. ":empty-user\n"
	. "routed:{PLAIN}pw:::::: host=127.0.0.2 port=2143 destuser=real-routed\n"
	. "routed6:{PLAIN}pw:::::: host=[0:0::1] port=3143\n"
	. "hostname:{PLAIN}pw:::::: host=mail.example.com\n"
	# two lines with an old Mac (CR-only) line end between them: one broken line
	. "mac:{PLAIN}pw\rmac2:{PLAIN}pw2\n");

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
        large_client_header_buffers 4 32k;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:1143;
            mail_auth_backend pop3 [::1]:1110;
            mail_auth_backend smtp 127.0.0.1;
            mail_auth_fail_wait 2s;
        }

        location = /nobackend {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
        }
    }
}

EOF

$t->run()->plan(36);

###############################################################################

my %ok = ('Auth-Method' => 'plain', 'Auth-User' => 'alice', 'Auth-Pass' => 'secret',
	'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1',
	'Client-Host' => '[UNAVAILABLE]');

my $r = auth_http('/auth', %ok);
like($r, qr/^HTTP\/1\.[01] 200/, 'OK answer is HTTP 200');
like($r, qr/^Auth-Status: OK\r$/m, 'Auth-Status OK');
like($r, qr/^Auth-Server: 127\.0\.0\.1\r$/m, 'Auth-Server for imap');
like($r, qr/^Auth-Port: 1143\r$/m, 'Auth-Port for imap');
unlike($r, qr/^Auth-(Pass|Wait|User):/m, 'no Auth-Pass/Wait/User on a plain OK');

$r = auth_http('/auth', %ok, 'Auth-Protocol' => 'pop3');
like($r, qr/^Auth-Server: ::1\r$/m, 'IPv6 backend for pop3');
like($r, qr/^Auth-Port: 1110\r$/m, 'pop3 port');

$r = auth_http('/auth', %ok, 'Auth-Protocol' => 'smtp', 'Auth-User' => 'bob');
like($r, qr/^Auth-Port: 25\r$/m, 'smtp default port 25, {SHA} user');

$r = auth_http('/auth', %ok, 'Auth-User' => 'routed', 'Auth-Pass' => 'pw');
like($r, qr/^Auth-Server: 127\.0\.0\.2\r\n(?s:.*)^Auth-Port: 2143\r$/m, 'per-user backend from passwd-file extra fields');
like($r, qr/^Auth-User: real-routed\r$/m, 'login rewritten for the backend');

# the first "password" of a CR-only line end would run on into the next line
$r = auth_http('/auth', %ok, 'Auth-User' => 'mac', 'Auth-Pass' => 'pw%0Dmac2');
like($r, qr/^Auth-Status: \[UNAVAILABLE\] Temporary server problem/m,
	'a line with a CR inside: no account from it (the malformed first line holds its user: a temporary failure)');

$r = auth_http('/auth', %ok, 'Auth-User' => 'routed6', 'Auth-Pass' => 'pw');
like($r, qr/^Auth-Server: ::1\r\n(?s:.*)^Auth-Port: 3143\r$/m,
	'per-user IPv6 backend, bracketed in the file, sent as nginx parses it');

# a per-user backend that is no IP literal (nginx needs one): the right password gets a
# temporary failure, never an OK pointing at it
$r = auth_http('/auth', %ok, 'Auth-User' => 'hostname', 'Auth-Pass' => 'pw');
like($r, qr/^Auth-Status: \[UNAVAILABLE\] Temporary server problem, try again later\r$/m,
	'per-user host name: temporary failure');
unlike($r, qr/^Auth-Server:/m, 'per-user host name: no Auth-Server');

# failures

$r = auth_http('/auth', %ok, 'Auth-Pass' => 'wrong');
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'wrong password');
like($r, qr/^Auth-Wait: 2\r$/m, 'Auth-Wait from mail_auth_fail_wait');
unlike($r, qr/^Auth-Error-Code:/m, 'no SMTP error code for imap');

$r = auth_http('/auth', %ok, 'Auth-Protocol' => 'smtp', 'Auth-Pass' => 'wrong');
like($r, qr/^Auth-Error-Code: 535 5\.7\.8\r$/m, 'SMTP failure: 535 5.7.8');

my $unknown = auth_http('/auth', %ok, 'Auth-User' => 'mallory');
like($unknown, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'unknown user: same answer');

$r = auth_http('/auth', %ok, 'Auth-User' => 'broken');
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'unknown scheme fails closed');

$r = auth_http('/nobackend', %ok);
like($r, qr/^Auth-Status: \[UNAVAILABLE\] Temporary server problem, try again later\r$/m,
	'no backend configured: temporary failure, never OK');

# escaping: the user and password arrive %-escaped (space, %, control characters)

$r = auth_http('/auth', %ok, 'Auth-Pass' => 'sec%72et');
like($r, qr/^Auth-Status: OK\r$/m, 'escaped password is unescaped before checking');

# malformed and hostile requests

like(auth_http('/auth', 'Auth-User' => 'alice'), qr/^HTTP\/1\.[01] 400/,
	'missing Auth-Method/Auth-Protocol: HTTP 400');
like(http_get('/auth'), qr/^HTTP\/1\.[01] 400/, 'plain GET: HTTP 400');
like(http("POST /auth HTTP/1.0\r\nHost: x\r\nAuth-Method: plain\r\nAuth-Protocol: imap\r\n"
	. "Content-Length: 0\r\n\r\n"), qr/^HTTP\/1\.[01] 405/, 'POST refused: 405');

$r = auth_http('/auth', %ok, 'Auth-User' => 'alice%0D%0AAuth-Status:%20OK');
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'CR/LF in user: refused');
is(() = $r =~ /^Auth-Status:/mg, 1, 'CR/LF in user: no injected header');

$r = auth_http('/auth', %ok, 'Auth-User' => 'ali%00ce');
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'NUL in user: refused');

$r = auth_http('/auth', %ok, 'Auth-Pass' => 'sec%zzret');
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'invalid escape: refused');

$r = auth_http('/auth', %ok, 'Auth-User' => 'a' x 5000);
like($r, qr/^Auth-Status: \[AUTHENTICATIONFAILED\] Invalid login or password\r$/m, 'oversized user: refused');

$r = auth_http('/auth', %ok, 'Auth-Method' => 'gssapi');
like($r, qr/^HTTP\/1\.[01] 400/, 'unknown method: not an auth_http request');

like(auth_http('/auth', %ok), qr/^Auth-Status: OK\r$/m, 'still answering after hostile input');

my $log = $t->read_file('error.log');
like($log, qr/mail_auth: .*users:4: /, 'malformed passwd-file line reported with file:line');
like($log, qr/mail_auth: .*users:9: user "mac": a carriage return inside the password field/,
	'a CR inside a line reported with file:line');
like($log, qr/\[error\].*user="hostname" .*result=backend-error reason="backend server \\x22mail\.example\.com\\x22 is not an IP address"/,
	'per-user host name: an error line for the operator');
like($log, qr/mail_auth: user="alice\\x0d\\x0aAuth-Status: OK" .*result=bad-request/,
	'hostile user logged escaped, once, with result');

###############################################################################
