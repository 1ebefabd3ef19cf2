#!/usr/bin/perl

# Tests for ngx-mail-auth: the Basic bridge and the JSON API at the edges of nginx's request
# lifecycle (found by a review helper): a subrequest into a bridge location (no access phase),
# an Authorization line the bridge removed still reaching an auth_request upstream, the bridge's
# header filter in a mail_auth_json location, and a broken body after a bad JSON API query;
# a request to a bridge location that is not an auth_http GET (no Auth-Method/Auth-Protocol,
# or a POST) gets the same answer whatever its password (auth_basic checked it: a right/wrong
# oracle that no ban and no counter stopped).

###############################################################################

use warnings;
use strict;

use Test::More;
use MIME::Base64 qw/ encode_base64 /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx qw/ :DEFAULT http /;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http auth_basic auth_request proxy/);
workers_can_read($t);

my $d = $t->testdir();
$t->write_file('htpasswd', "alice:{PLAIN}alice-secret\n");
$t->write_file('users', "alice:{PLAIN}alice-secret\n");
$t->write_file('web.txt', "web: let in\n");
my $basic_alice = 'Basic ' . encode_base64('alice:alice-secret', '');

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
        mail_auth_limit zone=sub:1m user=50/m;

        location = /basic {
            # a request that enters this block is answered with the location's configuration
            if ($arg_via_if) { }
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        # the same with a Dovecot master user: the backend gets the master login
        location = /basic-master {
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_master_user master "master pw";
            mail_auth_fail_wait 0;
        }

        # a web location asking the bridge location by subrequest
        location = /web {
            auth_request /basic;
            default_type text/plain;
            alias %%TESTDIR%%/web.txt;
        }

        # a plain mail_auth location only nginx mail may reach, and the ban listing, asked by
        # subrequest from a web location: nginx runs no access phase (allow/deny) for those
        location = /plain {
            deny all;
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }
        location = /web-plain {
            auth_request /plain;
            default_type text/plain;
            alias %%TESTDIR%%/web.txt;
        }
        location = /bans {
            deny all;
            mail_auth_limit_bans;
        }
        location = /web-bans {
            auth_request /bans;
            default_type text/plain;
            alias %%TESTDIR%%/web.txt;
        }

        location = /request {
            mail_auth;
            mail_auth_basic_header on;
            auth_request /check;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        location = /check {
            internal;
            proxy_pass http://127.0.0.1:%%PORT_8181%%/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization $mail_auth_basic;
        }

        location = /dovecot {
            mail_auth_json;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_fail_wait 0;
        }

        location = /dovecot-limited {
            mail_auth_json;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_fail_wait 0;
            mail_auth_limit zone=json_csrf:1m user=2/m;
        }
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::http_auth, port(8181), "$d/http-auth.log", $basic_alice);
$t->run()->plan(27);
$t->waitforsocket('127.0.0.1:' . port(8181));

my $mail = "Auth-Method: plain\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
	. "Client-IP: 192.0.2.7\r\nClient-Host: [UNAVAILABLE]\r\n";

###############################################################################

# the access phase does not run for subrequests: a bridge location must not answer them OK

my $r = http("GET /web HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: WRONG\r\n\r\n");
unlike($r, qr/web: let in/, 'subrequest into a bridge location: a wrong password not let in');
$r = http("GET /basic HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: alice-secret\r\n\r\n");
like($r, qr/Auth-Status: OK/, 'the bridge location itself still answers OK');

# nor a plain mail_auth location (its deny not applied: any web page's subrequest was answered,
# 200 with an Auth-Status, counted against the user it named), nor the ban listing
$r = http("GET /web-plain HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: WRONG\r\n\r\n");
like($r, qr/^HTTP\/1\.[01] 403/, 'subrequest into a mail_auth location behind deny: refused');
$r = http("GET /web-bans HTTP/1.0\r\nHost: localhost\r\n\r\n");
like($r, qr/^HTTP\/1\.[01] 403/, 'subrequest into the ban listing behind deny: refused');

# mail_auth_master_user in a bridge location (no store): the backend login is the master one,
# as the directive says (it was ignored: the client's own login went to the backend)
$r = http("GET /basic-master HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: alice-secret\r\n\r\n");
like($r, qr/Auth-Status: OK\r\n(?:.*\r\n)*Auth-User: alice\*master\r\n/, 'bridge with a master user: Auth-User is the master login');
like($r, qr/^Auth-Pass: master pw\r$/m, 'bridge with a master user: ... with the master password');
$r = http("GET /basic-master HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: WRONG\r\n\r\n");
unlike($r, qr/Auth-Status: OK/, 'bridge with a master user: a wrong password still refused by auth_basic');

# mail_auth_app_only where the access phase checks passwords: no app password is known there,
# so nginx -t refuses it (it was silently ignored: main passwords let in)
my ($rc, $out) = nginx_t_with($t, qr/mail_auth_master_user master "master pw";/,
	'mail_auth_app_only imap;');
ok($rc != 0 && $out =~ /\[emerg\].*"mail_auth_app_only" needs a credential store/,
	'nginx -t: mail_auth_app_only in a bridge location without a store refused') or diag($out);
($rc, $out) = nginx_t_with($t, qr/mail_auth_master_user master "master pw";/, 'mail_auth_app_only off;');
is($rc, 0, 'nginx -t: ... "off" accepted') or diag($out);

# an error_page for 401/403 inherited from the server level: nginx sends the access phase's
# refusal to that page before any header filter runs, so the bridge neither answered it nor
# counted it for mail_auth_limit (unlimited guessing, nginx -t silent): refused now
($rc, $out) = nginx_t_with($t, qr/server_name  localhost;/,
	"server_name localhost;\n        error_page 401 403 /error.html;");
ok($rc != 0 && $out =~ /\[emerg\].*"mail_auth_basic_header on" cannot be used with an "error_page" for 401 or 403/,
	'nginx -t: an inherited error_page 401 403 in a bridge location refused') or diag($out);
($rc, $out) = nginx_t_with($t, qr/server_name  localhost;/,
	"server_name localhost;\n        error_page 404 /error.html;");
is($rc, 0, 'nginx -t: an error_page for other codes accepted') or diag($out);

# an if block in a module's location has a configuration of its own, which the module's handlers
# then read: a bridge location's requests that entered it skipped the Host and ban checks before
# auth_basic (a password oracle for any page that reaches the listener), a plain one's got a bare
# 500. The block now answers as its location (/basic has one: "if ($arg_via_if) { }")
$r = http("GET /basic?via_if=1 HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: alice-secret\r\n\r\n");
like($r, qr/Auth-Status: OK/, 'an if block in a bridge location: the right password logs in');
$r = http("GET /basic?via_if=1 HTTP/1.0\r\nHost: evil.example\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: alice-secret\r\n\r\n");
like($r, qr/Auth-Status: .*Temporary server problem/, '... a foreign Host refused there too, before auth_basic');
# ... and an error_page for 401 given in that block is refused as one of the location's
($rc, $out) = nginx_t_with($t, qr/if \(\$arg_via_if\) \{ \}/, 'if ($arg_via_if) { error_page 401 /error.html; }');
ok($rc != 0 && $out =~ /\[emerg\].*"mail_auth_basic_header on" cannot be used with an "error_page" for 401 or 403/,
	'nginx -t: an error_page 401 in an if block of a bridge location refused') or diag($out);
($rc, $out) = nginx_t_with($t, qr/location = \/basic \{/, "location = /basic {\n            limit_except GET { deny all; }");
is($rc, 0, 'nginx -t: limit_except accepted') or diag($out);

# a user Basic cannot carry: no Authorization reaches the access phase, nor its upstream

$r = http("GET /request HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Authorization: $basic_alice\r\nAuth-User: ev:il\r\nAuth-Pass: x\r\n\r\n");
unlike($r, qr/Auth-Status: OK/, 'auth_request bridge: the request\'s own Authorization not passed on');
$r = http("GET /request HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: alice-secret\r\n\r\n");
like($r, qr/Auth-Status: OK/, 'auth_request bridge: good password');

# the JSON API's refusals keep their status whatever the request's headers

my $json = '{"username":"alice","password":"WRONG","client_ip":"192.0.2.9","service":"imap"}';
$r = http("POST /dovecot HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Content-Type: application/json\r\nContent-Length: " . length($json) . "\r\n\r\n$json");
like($r, qr!^HTTP/1.1 403!, 'JSON API: a wrong password is a 403 with Auth-Protocol in the request');

# a page in a browser that reaches the listener (a "simple" cross-site POST: a form whose
# text/plain body is JSON enough, or fetch with no-cors) must not check passwords: each failure
# would count, and the page could ban any user it names

my $form = '{"username":"alice","password":"guess","client_ip":"192.0.2.10","z":"=' . "\"}\r\n";
for my $h ("Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n", "Origin: null\r\n",
		"Sec-Fetch-Site: same-site\r\n") {
	$r = http("POST /dovecot-limited HTTP/1.0\r\nHost: 127.0.0.1\r\n$h"
		. "Content-Type: text/plain\r\nContent-Length: " . length($form) . "\r\n\r\n$form");
	like($r, qr!^HTTP/1.1 403.*requests from web browsers are not taken!s, "JSON API: a browser's POST refused ($h)" =~ s/\r\n/ /gr);
}
$json = '{"username":"alice","password":"alice-secret","client_ip":"192.0.2.11","service":"imap"}';
$r = http("POST /dovecot-limited HTTP/1.0\r\nHost: localhost\r\n"
	. "Content-Type: application/json\r\nContent-Length: " . length($json) . "\r\n\r\n$json");
like($r, qr!^HTTP/1.1 200!, 'JSON API: alice not banned by the browser\'s guesses');
unlike($t->read_file('error.log'), qr/user="alice" client=192\.0\.2\.10 .*result=/, 'JSON API: the browser\'s guesses not checked');

# a bad query and a broken chunked body: the body is never read as a request of its own

$r = http("POST /dovecot?mode=bogus HTTP/1.1\r\nHost: localhost\r\n"
	. "Transfer-Encoding: chunked\r\n\r\n"
	. "GET /smuggled HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
like($r, qr!^HTTP/1.1 400!, 'JSON API: bad query and broken body refused');
is(() = $r =~ m!HTTP/1\.1 \d{3} !g, 1, 'JSON API: the broken body not answered as a second request');

# not an auth_http GET: the password is not checked (the same answer for a right one)

my $status = sub { ($_[0] =~ m!^HTTP/1\.1 (\d{3})!)[0] // '' };
my @bare = map { $status->(http("GET /basic HTTP/1.0\r\nHost: localhost\r\n"
	. "Auth-User: alice\r\nAuth-Pass: $_\r\n\r\n")) } 'alice-secret', 'WRONG';
is("@bare", '401 401', 'bridge: Auth-User/Auth-Pass without Auth-Method/Auth-Protocol: 401 for the right password too');
my @post = map { my $r = http("POST /basic HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: alice\r\nAuth-Pass: $_\r\nContent-Length: 0\r\n\r\n"); $r =~ s/^Date: .*\r\n//m; $r } 'alice-secret', 'WRONG';
is($post[0], $post[1], 'bridge: a POST with auth_http headers: the same answer for a right and a wrong password');

###############################################################################
