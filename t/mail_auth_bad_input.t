#!/usr/bin/perl

# Tests for ngx-mail-auth: hostile auth_http requests, table-driven. Each row is sent raw to the
# module's location; each must get a safe answer (never "Auth-Status: OK", no header or byte
# the attacker chose in the response), exactly one decision line in the error log (or, when
# nginx itself rejects the request before the module runs, none), and no worker may crash.
# Then the same kind of input through the real mail proxy (IMAP LOGIN).

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http mail imap/);
workers_can_read($t);

$t->write_file('users', "alice:{PLAIN}alice-pw\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    large_client_header_buffers 4 32k;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_backend smtp 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8144), $t->testdir() . '/backend.log',
	alice => 'alice-pw');

# name, request headers (a list: duplicates allowed), what answers it:
#   refused  - the module: HTTP 200 with a failed-login Auth-Status
#   http400  - the module: HTTP 400, not an auth_http request
#   http405  - the module: HTTP 405, not GET/HEAD (method in the 4th field)
#   nginx    - nginx core rejects it (HTTP 400) before the module runs: no decision line
my $u = 'Auth-User';
my $p = 'Auth-Pass';
my @ok = ('Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Client-IP' => '192.0.2.1',
	'Auth-Login-Attempt' => 1);
my @rows = (
	['CR LF escaped in user', [@ok, $u => 'alice%0D%0AAuth-Status:%20OK', $p => 'alice-pw'], 'refused'],
	['CR LF escaped in password', [@ok, $u => 'alice', $p => 'x%0D%0AAuth-Status:%20OK'], 'refused'],
	['LF escaped in user', [@ok, $u => 'alice%0AINJECTED:%201', $p => 'alice-pw'], 'refused'],
	['NUL escaped in user', [@ok, $u => 'alice%00admin', $p => 'alice-pw'], 'refused'],
	['NUL escaped in password', [@ok, $u => 'alice', $p => 'alice-pw%00x'], 'refused'],
	['raw NUL in user', [@ok, $u => "alice\0admin", $p => 'alice-pw'], 'nginx'],
	['raw CR in user', [@ok, $u => "alice\rINJECTED: 1", $p => 'alice-pw'], 'nginx'],
	['20 KB user (over the module\'s limit)', [@ok, $u => 'A' x 20000, $p => 'x'], 'refused'],
	['64 KB user (over nginx\'s header buffers)', [@ok, $u => 'A' x 65536, $p => 'x'], 'nginx'],
	['64 KB password', [@ok, $u => 'alice', $p => '%41' x 21000], 'nginx'],
	['9 KB password (over the module\'s limit)', [@ok, $u => 'alice', $p => 'B' x 9000], 'refused'],
	['invalid escape %G1', [@ok, $u => 'al%G1ice', $p => 'alice-pw'], 'refused'],
	['truncated escape at the end', [@ok, $u => 'alice', $p => 'alice-pw%'], 'refused'],
	['truncated escape %2', [@ok, $u => 'alice%2', $p => 'alice-pw'], 'refused'],
	['duplicate Auth-User', [@ok, $u => 'nobody', $u => 'alice', $p => 'alice-pw'], 'refused'],
	['duplicate Auth-Pass', [@ok, $u => 'alice', $p => 'wrong', $p => 'alice-pw'], 'refused'],
	['duplicate Auth-Protocol', [@ok, 'Auth-Protocol' => 'smtp', $u => 'alice', $p => 'alice-pw'], 'refused'],
	['non-UTF-8 user, escaped', [@ok, $u => 'al%FF%FEice', $p => 'alice-pw'], 'refused'],
	['non-UTF-8 user, raw', [@ok, $u => "al\xff\xfeice", $p => 'alice-pw'], 'refused'],
	['control character (escape) in user', [@ok, $u => 'ali%1Bce', $p => 'alice-pw'], 'refused'],
	['missing Auth-User', [@ok, $p => 'alice-pw'], 'refused'],
	['missing Auth-Pass', [@ok, $u => 'alice'], 'refused'],
	['missing Auth-Method', [grep({ $_ ne 'plain' && $_ ne 'Auth-Method' } @ok), $u => 'alice', $p => 'alice-pw'], 'http400'],
	['missing Auth-Protocol', ['Auth-Method' => 'plain', 'Client-IP' => '192.0.2.1', $u => 'alice', $p => 'alice-pw'], 'http400'],
	['unknown Auth-Method', ['Auth-Method' => 'gssapi', 'Auth-Protocol' => 'imap', $u => 'alice', $p => 'alice-pw'], 'http400'],
	['unknown Auth-Protocol', ['Auth-Method' => 'plain', 'Auth-Protocol' => 'nntp', $u => 'alice', $p => 'alice-pw'], 'http400'],
	['Client-IP garbage', ['Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Client-IP' => '<script>', $u => 'alice', $p => 'alice-pw'], 'refused'],
	['Client-IP out of range', ['Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Client-IP' => '999.1.1.1', $u => 'alice', $p => 'alice-pw'], 'refused'],
	['Auth-Login-Attempt garbage', ['Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => '1; DROP', $u => 'alice', $p => 'alice-pw'], 'refused'],
	['Auth-Login-Attempt overflow', ['Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => '99999999999999999999', $u => 'alice', $p => 'alice-pw'], 'refused'],
	['header-looking user name', [@ok, $u => 'Auth-Status:%20OK', $p => 'x'], 'refused'],
	['APOP without Auth-Salt', ['Auth-Method' => 'apop', 'Auth-Protocol' => 'pop3', $u => 'alice', $p => '0' x 32], 'refused'],
	['EXTERNAL without TLS', ['Auth-Method' => 'external', 'Auth-Protocol' => 'imap', $u => 'alice', $p => ''], 'refused'],
	['SMTP none, injection in RCPT', ['Auth-Method' => 'none', 'Auth-Protocol' => 'smtp', 'Auth-SMTP-To' => 'RCPT TO:<a@x%0D%0AAuth-Status: OK>'], 'refused'],
	['POST', [@ok, $u => 'alice', $p => 'alice-pw'], 'http405', 'POST'],
	['PUT', [@ok, $u => 'alice', $p => 'alice-pw'], 'http405', 'PUT'],
	['DELETE', [@ok, $u => 'alice', $p => 'alice-pw'], 'http405', 'DELETE'],
);

$t->run()->plan(4 * @rows + 8);
$t->waitforsocket('127.0.0.1:' . port(8144));

###############################################################################

my %status_ok = map { $_ => 1 } ('Invalid login or password',
	'Temporary server problem, try again later', 'Relay access denied');
my %headers_ok = map { lc $_ => 1 } qw/ Server Date Content-Type Content-Length Connection
	Auth-Status Auth-Wait Auth-Error-Code Allow /;

my $i = 0;
for my $row (@rows) {
	my ($name, $h, $expect, $method) = @$row;
	$i++;
	my $req = ($method // 'GET') . " /auth?row=$i HTTP/1.0\r\nHost: localhost\r\n";
	my @h = @$h;
	while (my ($k, $v) = splice @h, 0, 2) {
		$req .= "$k: $v\r\n";
	}
	$req .= "Content-Length: 0\r\n" if $method;
	my $r = http($req . "\r\n") // '';
	my ($head) = split /\r\n\r\n/, $r, 2;
	$head //= '';
	my ($code) = $head =~ /^HTTP\/1\.[01] (\d{3})/;
	$code //= 'none';

	my $want = { refused => 200, http400 => 400, http405 => 405, nginx => 400 }->{$expect};
	is($code, $want, "$name: HTTP $want ($expect)");

	# never OK; only known headers; Auth-Status one of the fixed messages; nothing injected
	my @bad;
	for my $line (split /\r\n/, $head) {
		next if $line =~ /^HTTP\//;
		my ($k, $v) = $line =~ /^([^:]+):\s?(.*)$/ or do { push @bad, "not a header: $line"; next };
		push @bad, "unexpected header $k" unless $headers_ok{lc $k};
		push @bad, "Auth-Status $v" if lc $k eq 'auth-status' && !$status_ok{$v};
		push @bad, "control byte in $k" if $v =~ /[\x00-\x08\x0a-\x1f\x7f]/;
	}
	push @bad, 'attacker text echoed' if $r =~ /INJECTED|DROP|<script>|admin/;
	ok(!@bad, "$name: safe answer") or diag(join "\n", @bad, $r);
	unlike($head, qr/^Auth-Status: OK/mi, "$name: never OK");

	my $lines = () = $t->read_file('error.log') =~ /mail_auth: .*"(?:GET|POST|PUT|DELETE) \/auth\?row=$i HTTP/g;
	is($lines, $expect eq 'nginx' ? 0 : 1, "$name: " . ($expect eq 'nginx'
		? 'rejected by nginx, no decision line' : 'one decision line'));
}

###############################################################################

# The same kind of input through the real mail proxy: nginx escapes what the client sent

my $s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a1 LOGIN "we\\"ird\\\\%20us' . "\xc3\xa9" . 'r" "alice-pw"');
$s->check(qr/^a1 NO/, 'imap: quote, backslash, %, non-ASCII in the user: refused');
my $logged = 'mail_auth: user="we\x22ird\x5c%20us\xc3\xa9r" client=127.0.0.1 protocol=imap';
ok(wait_for(3, sub { (() = $t->read_file('error.log') =~ /\Q$logged\E/g) == 1 }),
	'imap: logged once, escaped')
	or diag(($t->read_file('error.log') =~ /(mail_auth: user="we.*)/)[0]);

$s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a1 LOGIN ' . ('u' x 1000) . ' alice-pw');
$s->check(qr/^a1 NO/, 'imap: 1000-byte user refused');

$s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a1 LOGIN alice "alice-pw%00"');
$s->check(qr/^a1 NO/, 'imap: "%00" in the password is just a wrong password');

# nothing crashed, and a good login still works

my ($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'alice', 'alice-pw');
is($rc, 0, 'good login after all that') or diag($out);
unlike($t->read_file('error.log'), qr/exited on signal|panic caught/, 'no worker crashed, no panic');
is(() = $t->read_file('error.log') =~ /\[alert\]|\[crit\]|\[emerg\]/g, 0, 'no alert, crit or emerg');
like($t->read_file('error.log'), qr/mail_auth: user="alice" .* result=ok/, 'the good login was logged');

###############################################################################
