#!/usr/bin/perl

# Tests for ngx-mail-auth: what an operator touches, through the real nginx with two workers:
#   a) mail_auth_limit_bans refuses lifts a web browser sends (Origin / Sec-Fetch-Site): a page
#      in an administrator's browser could otherwise lift any ban with a cross-site POST; and
#      requests for a Host that is not one of the server's names nor an address (a page that
#      rebinds its own name to the listener's address reads the listing as same-origin); the
#      mail_auth location refuses such hosts too (the page would read auth_http answers), a
#      Basic-bridge location before auth_basic checks the password
#   b) nginx -t warns, as nginx does for allow/set_real_ip_from, when a network of
#      mail_auth_limit_exempt or mail_auth_real_ip_from has address bits below its prefix (the
#      rule silently covers the whole network: 10.1.2.3/1 is half of IPv4)
#   c) a Basic-bridge location (mail_auth_basic_header on + auth_basic) keeps the promises of
#      mail_auth_limit and of the transport policy: auth_basic checks the password in the access
#      phase, before the module's content handler, so its refusals were never counted (no ban,
#      ever) and a cleartext login without TLS (or one on an auth=off listener) was told a wrong
#      password from a right one; also with passwords ending in a NUL byte, which auth_basic
#      reads up to the NUL and the module refuses: refused before the access phase

###############################################################################

use warnings;
use strict;

use Test::More;
use JSON::PP qw/ decode_json /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'curl not installed') unless have_tool('curl');

my $d = $t->testdir();
$t->write_file('users', "alice:{PLAIN}alice-pw\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_limit zone=ops:1m ip=2/m ban=120s;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  *.mx.example localhost auth.internal .mail.internal ~^re\.example$ ~rx.example;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        location = /bans {
            allow 127.0.0.1;
            deny all;
            mail_auth_limit_bans;

            # a request that enters this block is answered with its configuration
            if ($arg_via_if) {
            }
        }
    }

    server {
        listen       127.0.0.1:8081 reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_limit zone=bridge:1m ip=2/m ban=120s;
            mail_auth_require_tls imap;
            mail_auth_listener mx auth=off;
            mail_auth_fail_wait 0;
        }
    }

    server {
        listen       127.0.0.1:8082;
        server_name  localhost;

        # a bridge whose access check (auth_request) knows alice's password
        location = /auth {
            mail_auth;
            mail_auth_basic_header on;
            auth_request /allow;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        location = /allow {
            internal;
            if ($http_authorization = "Basic YWxpY2U6YWxpY2UtcHc=") {
                return 204;
            }
            return 401;
        }
    }
}

EOF

# the auth_request bridge (8082) only where nginx has the module
my $auth_request = $t->has_module('auth_request');
unless ($auth_request) {
	my $conf = $t->read_file('nginx.conf');
	$conf =~ s/\n    server \{\n        listen       127\.0\.0\.1:8082;.*?\n    \}\n/\n/s or die "no 8082 block\n";
	$t->write_file('nginx.conf', $conf);
}

$t->run()->plan(48);

###############################################################################

# A wrong password for alice from client $ip (each a new one: a repeated one counts once).
my $n = 0;
sub fail_from {
	my ($ip) = @_;
	$n++;
	return auth_http('/auth', 'Auth-Method' => 'plain', 'Auth-Protocol' => 'imap',
		'Auth-User' => 'alice', 'Auth-Pass' => "wrong-$n", 'Auth-Login-Attempt' => 1,
		'Client-IP' => $ip);
}

# curl through the real nginx: (HTTP status, body).
sub curl {
	my ($method, $url, @more) = @_;
	my ($rc, $out) = run_tool('curl', '-s', '-X', $method, '-w', '\n%{http_code}', @more, $url);
	my @l = split /\n/, $out;
	my $code = pop @l // '';
	my $body = join("\n", @l);
	$body =~ s/\s+\z//;
	return ($code, $body);
}

sub url { return 'http://127.0.0.1:' . port(8080) . $_[0]; }

sub banned {
	my ($client) = @_;
	my (undef, $body) = curl('GET', url('/bans'));
	my $j = eval { decode_json($body) } // {};
	return scalar grep { ($_->{client} // '') eq $client } @{$j->{bans} // []};
}

###############################################################################

# a) lifts from a browser

fail_from('192.0.2.7') for 1 .. 3;
ok(banned('192.0.2.7'), 'browser: 192.0.2.7 is banned');

# what a page on another site makes the administrator's browser send (a form's POST: no
# preflight, the answer is not readable by the page but the lift would happen)
my ($code, $body) = curl('POST', url('/bans?client=192.0.2.7'),
	'-H', 'Origin: http://evil.example', '-H', 'Content-Type: application/x-www-form-urlencoded',
	'-d', 'x=1');
is($code, 403, 'browser: a cross-site POST is refused') or diag($body);
ok(banned('192.0.2.7'), 'browser: ... and lifted nothing');
($code) = curl('DELETE', url('/bans?client=192.0.2.7'), '-H', 'Sec-Fetch-Site: same-site');
is($code, 403, 'browser: a DELETE with Sec-Fetch-Site is refused');
ok(banned('192.0.2.7'), 'browser: ... and lifted nothing');
like($t->read_file('error.log'),
	qr/\[warn\].*mail_auth_limit_bans: refused a lift sent by a web browser \(origin: http:\/\/evil\.example\)/,
	'browser: the refusal is logged');
($code, $body) = curl('GET', url('/bans'), '-H', 'Origin: http://evil.example');
is($code, 200, 'browser: the listing still answers (a cross-origin page cannot read it)');

# DNS rebinding: a page whose own name now resolves to the listener reads the listing as
# same-origin (no Origin, no Sec-Fetch-*: its origin is plain http); its requests name its host
($code, $body) = curl('GET', url('/bans'), '-H', 'Host: evil.example');
is($code, 403, 'rebinding: the listing refuses a host that is not the server\'s');
unlike($body, qr/192\.0\.2\.7/, 'rebinding: ... and shows no client') or diag($body);
($code) = curl('GET', url('/bans'), '-H', 'Host: evil.example:' . port(8080));
is($code, 403, 'rebinding: ... with its port too');
($code) = curl('POST', url('/bans?client=192.0.2.7'), '-H', 'Host: evil.example');
is($code, 403, 'rebinding: a lift for that host is refused');
ok(banned('192.0.2.7'), 'rebinding: ... and lifted nothing');
like($t->read_file('error.log'),
	qr/\[warn\].*mail_auth_limit_bans: refused a request for host "evil\.example"/,
	'rebinding: the refusal is logged');
my @ours = map { (curl('GET', url('/bans'), '-H', "Host: $_"))[0] }
	'LOCALHOST', 'a.mx.example', '[::1]', '127.0.0.1';
is("@ours", '200 200 200 200', 'rebinding: the server\'s first name (a wildcard), localhost and addresses are served');
($code) = curl('GET', url('/bans'), '-H', 'Host: mx.example');
is($code, 403, 'rebinding: ... a name the wildcard does not cover is not');
# every name of server_name, not only the first one nginx keeps after configuration
@ours = map { (curl('GET', url('/bans'), '-H', "Host: $_"))[0] }
	'auth.internal', 'mail.internal', 'x.mail.internal', 'mail.internal.evil', 're.example', 'rx.example';
is("@ours", '200 200 200 403 403 403',
	'rebinding: the server\'s other names are served (not a regular expression, not a longer name)');
@ours = map { (curl('GET', url('/bans?via_if=1'), '-H', "Host: $_"))[0] } 'a.mx.example', 'evil.example';
is("@ours", '200 403', 'rebinding: ... inside an if block of the location too');

# the mail_auth location itself: nginx mail sends its auth_http URL's host ("localhost" for a
# unix socket); a rebinding page sends its own and would read the answer, claiming any client
# address (and any verified certificate, whose EXTERNAL answer carries the backend password)
sub auth_host {
	my ($host) = @_;
	return http("GET /auth HTTP/1.0\r\nHost: $host\r\nAuth-Method: plain\r\n"
		. "Auth-Protocol: imap\r\nAuth-User: alice\r\nAuth-Pass: alice-pw\r\n"
		. "Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.50\r\n\r\n") // '';
}
my $ans = auth_host('evil.example');
like($ans, qr/^Auth-Status: \[UNAVAILABLE\] Temporary server problem/m,
	'rebinding: the mail_auth location refuses a foreign host (a temporary failure)') or diag($ans);
my @again = map { auth_host('evil.example') =~ /^Auth-Status: \[UNAVAILABLE\] Temporary/m ? 't' : 'no' } 1 .. 3;
is("@again", 't t t', 'rebinding: ... not counted as failed logins (no ban of the user it names)');
like($t->read_file('error.log'),
	qr/\[error\].*mail_auth: refused a request for host "evil\.example", neither a name of this server/,
	'rebinding: ... logged as an error');
my @answers = map { auth_host($_) =~ /Auth-Status: OK/ ? 'OK' : 'no' }
	'localhost', '127.0.0.1', 'a.mx.example';
is("@answers", 'OK OK OK', 'rebinding: nginx mail\'s hosts (localhost, an address, the server name) answered');
@answers = map { auth_host($_) =~ /Auth-Status: OK/ ? 'OK' : 'no' } 'auth.internal', 'imap.mail.internal';
is("@answers", 'OK OK', 'rebinding: ... and by the server\'s other names (an auth_http URL naming one)');
like(auth_host('re.example'), qr/^Auth-Status: \[UNAVAILABLE\] Temporary/m,
	'rebinding: ... not by a regular expression of server_name');

# curl, scripts: as before
($code, $body) = curl('POST', url('/bans?client=192.0.2.7'));
is("$code $body", '200 {"lifted":1}', 'browser: the same POST from curl lifts the ban');
ok(!banned('192.0.2.7'), 'browser: ... lifted');

# b) nginx -t: networks with address bits below their prefix

my ($rc, $out) = nginx_t_with($t, qr/mail_auth_fail_wait 0;/,
	'mail_auth_fail_wait 0; mail_auth_limit_exempt 127.0.0.9/8 192.0.2.10; '
	. 'mail_auth_real_ip_from 10.1.2.3/1 2001:db8::1/32;');
ok($rc == 0 && $out =~ /\[warn\].*low address bits of 127\.0\.0\.9\/8 are meaningless in "mail_auth_limit_exempt": it covers all of 127\.0\.0\.0\/8/,
	'nginx -t: mail_auth_limit_exempt 127.0.0.9/8 warned about') or diag($out);
ok($out =~ /\[warn\].*low address bits of 10\.1\.2\.3\/1 are meaningless in "mail_auth_real_ip_from": it covers all of 0\.0\.0\.0\/1/
	&& $out =~ /low address bits of 2001:db8::1\/32 are meaningless/,
	'nginx -t: mail_auth_real_ip_from 10.1.2.3/1 and 2001:db8::1/32 warned about') or diag($out);
($rc, $out) = nginx_t_with($t, qr/mail_auth_fail_wait 0;/,
	'mail_auth_fail_wait 0; mail_auth_limit_exempt 127.0.0.0/8 192.0.2.10; '
	. 'mail_auth_real_ip_from 10.0.0.0/8 2001:db8::/32 unix:;');
ok($rc == 0 && $out !~ /low address bits/, 'nginx -t: networks written as such are not') or diag($out);

# c) the Basic bridge: the limiter and the transport policy before auth_basic

# An auth_http request to the bridge location: its Auth-Status (and the rest, for diag).
sub bridge {
	my ($ip, $pass, %h) = @_;
	%h = ('Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Auth-User' => 'alice',
		'Auth-Pass' => $pass, 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip, %h);
	my $host = delete $h{Host} // 'localhost';
	my $port = delete $h{Port} // 8081;
	my $req = "GET /auth HTTP/1.0\r\nHost: $host\r\n";
	$req .= "$_: $h{$_}\r\n" for sort keys %h;
	my $s = IO::Socket::INET->new(Proto => 'tcp', PeerAddr => '127.0.0.1:' . port($port))
		or return "cannot connect: $!";
	my $r = http("$req\r\n", socket => $s) // '';
	return $1 if $r =~ /^Auth-Status: (.*?)\r?$/m;
	return "no Auth-Status in: $r";
}

# auth_basic's refusals so far (it logs each wrong password)
sub mismatches {
	return scalar grep { /user "alice": password mismatch/ } split /\n/, $t->read_file('error.log');
}

my @tls = ('Auth-SSL' => 'on');
my $before = mismatches();
like(bridge('192.0.2.20', "bridge-guess-$_", @tls), qr/AUTHENTICATIONFAILED/, "bridge: wrong password $_")
	for 1 .. 2;
is(mismatches() - $before, 2, 'bridge: auth_basic checked those two');
like(bridge('192.0.2.20', 'bridge-guess-3', @tls), qr/AUTHENTICATIONFAILED/, 'bridge: a third is refused');
like(bridge('192.0.2.20', 'alice-pw', @tls), qr/AUTHENTICATIONFAILED/,
	'bridge: then the right password is refused too (ip=2/m: banned)');
is(mismatches() - $before, 2, 'bridge: ... without auth_basic checking any more passwords');
like($t->read_file('error.log'), qr/client=192\.0\.2\.20 .*result=rate-limited/, 'bridge: logged as rate-limited');
like(bridge('192.0.2.21', 'alice-pw', @tls), qr/^OK$/, 'bridge: another client logs in');

# without TLS (mail_auth_require_tls imap), and on the auth=off listener: a right and a wrong
# password get the same answer, and no password is checked
$before = mismatches();
my $wrong = bridge('192.0.2.22', 'cleartext-guess');
is($wrong, bridge('192.0.2.22', 'alice-pw'), 'bridge: without TLS, a wrong and a right password get one answer');
like($wrong, qr/PRIVACYREQUIRED/, 'bridge: ... the TLS refusal');
is(bridge('192.0.2.23', 'mx-guess', @tls, 'X-Mail-Auth-Listener' => 'mx'),
	bridge('192.0.2.23', 'alice-pw', @tls, 'X-Mail-Auth-Listener' => 'mx'),
	'bridge: on an auth=off listener, a wrong and a right password get one answer');
is(mismatches() - $before, 0, 'bridge: none of them was checked by auth_basic');

# a rebinding page at the bridge location: refused before auth_basic checks the password (else
# a right and a wrong password are told apart), not counted (no ban)
$before = mismatches();
my @rebound = map { bridge('192.0.2.40', $_, @tls, Host => 'evil.example') }
	'alice-pw', 'rebind-guess', 'alice-pw', 'rebind-guess-2';
is(join('|', @rebound), join('|', ('[UNAVAILABLE] Temporary server problem, try again later') x 4),
	'bridge: a foreign host gets a temporary failure, right or wrong password');
is(mismatches() - $before, 0, 'bridge: ... none checked by auth_basic');
like(bridge('192.0.2.40', 'alice-pw', @tls), qr/^OK$/, 'bridge: ... and the client is not banned');
# ... and before auth_request
SKIP: {
	skip 'nginx without auth_request', 2 unless $auth_request;
	@rebound = map { bridge('192.0.2.41', $_, Host => 'evil.example', Port => 8082) } 'alice-pw', 'rebind-guess';
	is(join('|', @rebound), join('|', ('[UNAVAILABLE] Temporary server problem, try again later') x 2),
		'bridge: a foreign host is refused before auth_request, right or wrong password');
	is(join('|', map { bridge('192.0.2.41', $_, Port => 8082) } 'alice-pw', 'rebind-guess'),
		'OK|[AUTHENTICATIONFAILED] Invalid login or password',
		'bridge: ... whose check tells them apart for nginx mail\'s host');
}

# The Basic bridge, with a password ending in a NUL byte (AUTH PLAIN carries one; nginx mail
# sends it as %00): auth_basic's crypt reads the password up to the NUL ("alice-pw%00" passes
# it), the module refuses such a request. Before: the precheck left it to auth_basic, which
# checked every such guess (never counted: 5 of 5 with ip=2/m), the ban and the TLS policy
# bypassed; now refused before auth_basic, like the content handler refuses it.
$before = mismatches();
bridge('192.0.2.30', "nul-guess-$_%00", @tls) for 1 .. 5;
is(mismatches() - $before, 0, 'bridge: guesses ending in NUL: none checked by auth_basic (before: every one, uncounted)');
my $right = bridge('192.0.2.30', 'alice-pw%00', @tls);
is($right, bridge('192.0.2.30', 'nul-guess-9%00', @tls), 'bridge: banned, the right and a wrong password get one answer');
is(bridge('192.0.2.31', 'alice-pw%00'), bridge('192.0.2.31', 'nul-guess%00'),
	'bridge: without TLS, a right and a wrong password get one answer');

###############################################################################


# named subs above use $t: end it here, while Test::More can still run its last checks (no
# alerts) and its clean-up (the test directory), not at global destruction
undef $t;
