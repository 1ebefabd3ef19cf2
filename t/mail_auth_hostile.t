#!/usr/bin/perl

# Tests for ngx-mail-auth: hostile auth_http requests, sent raw to the module's location on
# loopback, one table row each. For every row:
#   - the HTTP answer is what the row says: the module's failed login (200), its 400 (not an
#     auth_http request) or 405 (not GET/HEAD), or nginx core's own 400/405 before the module
#     runs (marked "nginx" in the row);
#   - never "Auth-Status: OK";
#   - nothing of the attacker's in the answer: only known headers, Auth-Status one of the fixed
#     messages, no CR/LF/NUL/control byte inside a header value, no injected header line;
#   - exactly one line of the module in the error log for that request (the request is tagged
#     by its URI, /auth?row=N, which nginx appends to every line it logs for the request), in
#     the documented decision format for failed logins, printable ASCII only; none when nginx
#     rejected the request, and then nginx's own "client sent ..." line instead.
# Then the same kind of input through the real mail proxy (IMAP LOGIN / AUTHENTICATE PLAIN),
# which escapes what the client sent: refused, one decision line, the backend never reached.
# At the end: no worker crashed, and a good login still works.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use MIME::Base64 qw/ encode_base64 /;

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

# 8080: header buffers large enough that 64 KB values reach the module (its own limits apply);
# 8081: nginx's default buffers (4 8k), so nginx itself rejects 64 KB header lines.
$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_passwd_file %%TESTDIR%%/users;
    mail_auth_backend imap 127.0.0.1:8144;
    mail_auth_fail_wait 0;
    mail_auth_log_level notice;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;
        large_client_header_buffers 4 96k;

        location = /auth {
            mail_auth;
        }
    }

    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        location = /auth {
            mail_auth;
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

# Rows: [ name, headers (a list: duplicates and order kept), expect, options ]
#   expect: refused  the module answers HTTP 200 with a failed login (one decision line)
#           http400  the module answers HTTP 400: not an auth_http request (one line)
#           http405  the module answers HTTP 405: not GET/HEAD (one line)
#           nginx400 nginx core answers 400 before the module runs (no module line; nginx
#                    logs "client sent ..." for the request instead)
#           nginx405 nginx core answers 405 (TRACE) before the module runs
#   options: method (default GET), port (8080 default; 8081 = nginx's default buffers),
#            user (regex the decision line's user="..." must match: logged escaped),
#            result (regex for the decision line's result=), version (HTTP/1.0 default),
#            body (sent after the headers)
my ($U, $P, $M, $R, $IP, $A) = ('Auth-User', 'Auth-Pass', 'Auth-Method', 'Auth-Protocol',
	'Client-IP', 'Auth-Login-Attempt');
my @base = ($M => 'plain', $R => 'imap', $A => 1, $IP => '192.0.2.1', 'Client-Host' => '[UNAVAILABLE]');
# the usual headers of nginx mail, some replaced (undef: left out)
sub with {
	my (%o) = @_;
	my @h = @base;
	my @out;
	while (my ($k, $v) = splice @h, 0, 2) {
		$v = $o{$k} if exists $o{$k};
		push @out, $k => $v if defined $v;
	}
	return @out;
}

my $big = 'A' x 65536;
my $smuggled = "GET /auth HTTP/1.0\r\nAuth-Method: plain\r\nAuth-Protocol: imap\r\n"
	. "Auth-User: alice\r\nAuth-Pass: alice-pw\r\n\r\n";
my @rows = (
	# header injection through the values nginx escapes (%0D%0A) and raw CR/LF
	['CR LF escaped in user, right password', [with(), $U => 'alice%0D%0AAuth-Status:%20OK', $P => 'alice-pw'],
		'refused', { user => qr/^alice\\x0d\\x0aAuth-Status: OK$/, result => qr/^bad-request$/ }],
	['CR LF escaped in password', [with(), $U => 'alice', $P => 'alice-pw%0D%0AAuth-Status:%20OK'],
		'refused', { user => qr/^alice$/ }],
	['LF escaped in user', [with(), $U => 'alice%0AINJECTED:%201', $P => 'alice-pw'], 'refused',
		{ user => qr/^alice\\x0aINJECTED: 1$/ }],
	['CR escaped at the end of the user, right password', [with(), $U => 'alice%0D', $P => 'alice-pw'],
		'refused', { user => qr/^alice\\x0d$/ }],
	['raw CR inside the user value', [with(), $U => "alice\rINJECTED: 1", $P => 'alice-pw'], 'nginx400'],
	['raw LF inside the user value (nginx ends the line there)',
		[with(), $U => "r06-rawlf\nAuth-Status: OK", $P => 'alice-pw'], 'refused',
		{ user => qr/^r06-rawlf$/, result => qr/^unknown-user$/ }],
	['raw CR LF in the user value injecting a second Auth-Method',
		[with(), $U => "alice\r\nAuth-Method: plain", $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['header-looking user name', [with(), $U => 'Auth-Status:%20OK', $P => 'x'], 'refused',
		{ user => qr/^Auth-Status: OK$/ }],

	# NUL, escaped and raw
	['NUL escaped inside the user, right password', [with(), $U => 'alice%00admin', $P => 'alice-pw'],
		'refused', { user => qr/^alice\\x00admin$/, result => qr/^bad-request$/ }],
	['NUL escaped at the end of the user, right password', [with(), $U => 'alice%00', $P => 'alice-pw'],
		'refused', { result => qr/^bad-request$/ }],
	['NUL escaped in the password', [with(), $U => 'alice', $P => 'alice-pw%00x'], 'refused',
		{ result => qr/^bad-request$/ }],
	['raw NUL in the user', [with(), $U => "alice\0admin", $P => 'alice-pw'], 'nginx400'],
	['raw NUL in the password', [with(), $U => 'alice', $P => "alice-pw\0"], 'nginx400'],

	# oversize values: 64 KB reaching the module (8080) and rejected by nginx (8081)
	['64 KB user (large buffers: the module\'s limit)', [with(), $U => $big, $P => 'x'], 'refused',
		{ result => qr/^bad-request$/ }],
	['64 KB password (large buffers)', [with(), $U => 'alice', $P => $big], 'refused',
		{ result => qr/^bad-request$/ }],
	['64 KB escaped password (large buffers)', [with(), $U => 'alice', $P => '%41' x 21846], 'refused',
		{ result => qr/^bad-request$/ }],
	['64 KB Client-IP (large buffers)', [with($IP => $big), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['64 KB Auth-Login-Attempt (large buffers)', [with($A => '9' x 65536), $U => 'alice', $P => 'alice-pw'],
		'refused', { result => qr/^bad-request$/ }],
	['64 KB user (nginx default buffers)', [with(), $U => $big, $P => 'x'], 'nginx400', { port => 8081 }],
	['64 KB password (nginx default buffers)', [with(), $U => 'alice', $P => $big], 'nginx400', { port => 8081 }],
	['4097-byte user (one over the module\'s limit)', [with(), $U => 'u' x 4097, $P => 'x'], 'refused',
		{ port => 8081, result => qr/^bad-request$/ }],
	['8193-byte password (one over the module\'s limit)', [with(), $U => 'alice', $P => 'p' x 8193],
		'refused', { result => qr/^bad-request$/ }],

	# invalid percent escapes
	['invalid escape %G1 in the user', [with(), $U => 'al%G1ice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['trailing % in the user', [with(), $U => 'alice%', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['trailing % in the password', [with(), $U => 'alice', $P => 'alice-pw%'], 'refused',
		{ result => qr/^bad-request$/ }],
	['truncated escape %2 in the user', [with(), $U => 'alice%2', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['%% in the user', [with(), $U => 'al%%69ce', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['double-escaped user (%2561lice is "%61lice", not "alice")', [with(), $U => '%2561lice', $P => 'alice-pw'],
		'refused', { user => qr/^%61lice$/, result => qr/^unknown-user$/ }],

	# duplicate headers the module interprets
	['duplicate Auth-User', [with(), $U => 'nobody', $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['duplicate Auth-User, same value', [with(), $U => 'alice', $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['duplicate Auth-User, other case', [with(), 'auth-user' => 'nobody', $U => 'alice', $P => 'alice-pw'],
		'refused', { result => qr/^bad-request$/ }],
	['duplicate Auth-Pass', [with(), $U => 'alice', $P => 'wrong', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['duplicate Auth-Protocol', [with(), $R => 'smtp', $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['duplicate Auth-Method', [with(), $M => 'login', $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],

	# not UTF-8, control characters, look-alikes
	['non-UTF-8 user, escaped', [with(), $U => 'al%FF%FEice', $P => 'alice-pw'], 'refused',
		{ user => qr/^al\\xff\\xfeice$/, result => qr/^bad-request$/ }],
	['non-UTF-8 user, raw bytes', [with(), $U => "al\xff\xfeice", $P => 'alice-pw'], 'refused',
		{ user => qr/^al\\xff\\xfeice$/, result => qr/^bad-request$/ }],
	['overlong UTF-8 "a" in the user', [with(), $U => '%C1%A1lice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['overlong UTF-8 NUL in the user', [with(), $U => 'alice%C0%80', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['ESC in the user', [with(), $U => 'ali%1Bce', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['DEL in the user', [with(), $U => 'alice%7F', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['right-to-left override in the user', [with(), $U => 'alice%E2%80%AE', $P => 'alice-pw'], 'refused',
		{ user => qr/^alice\\xe2\\x80\\xae$/ }],
	['escaped space before the user', [with(), $U => '%20alice', $P => 'alice-pw'], 'refused',
		{ user => qr/^ alice$/ }],
	['colon in the user (the passwd-file separator)', [with(), $U => 'alice:alice-pw', $P => 'alice-pw'],
		'refused', { user => qr/^alice:alice-pw$/ }],

	# required headers missing, and headers nginx drops itself
	['no Auth-Method', [with($M => undef), $U => 'alice', $P => 'alice-pw'], 'http400'],
	['no Auth-Protocol', [with($R => undef), $U => 'alice', $P => 'alice-pw'], 'http400'],
	['no Auth-User', [with(), $P => 'alice-pw'], 'refused', { result => qr/^bad-request$/ }],
	['no Auth-Pass', [with(), $U => 'alice'], 'refused', { result => qr/^bad-request$/ }],
	['no Auth-* header at all', [], 'http400'],
	['Auth-User with a space before the colon (nginx rejects the line)',
		[with(), 'Auth-User ' => 'alice', $P => 'alice-pw'], 'nginx400'],
	['Auth_User with an underscore (nginx drops the header)',
		[with(), 'Auth_User' => 'alice', $P => 'alice-pw'], 'refused', { result => qr/^bad-request$/ }],

	# wrong HTTP methods
	['POST', [with(), $U => 'alice', $P => 'alice-pw'], 'http405', { method => 'POST' }],
	['PUT', [with(), $U => 'alice', $P => 'alice-pw'], 'http405', { method => 'PUT' }],
	['DELETE', [with(), $U => 'alice', $P => 'alice-pw'], 'http405', { method => 'DELETE' }],
	['OPTIONS', [with(), $U => 'alice', $P => 'alice-pw'], 'http405', { method => 'OPTIONS' }],
	['TRACE (nginx refuses it itself)', [with(), $U => 'alice', $P => 'alice-pw'], 'nginx405',
		{ method => 'TRACE' }],

	# unknown Auth-Method / Auth-Protocol
	['unknown Auth-Method', [with($M => 'gssapi'), $U => 'alice', $P => 'alice-pw'], 'http400'],
	['Auth-Method with an escaped CR LF', [with($M => 'plain%0D%0AAuth-Status:%20OK'), $U => 'alice', $P => 'alice-pw'],
		'http400'],
	['unknown Auth-Protocol', [with($R => 'nntp'), $U => 'alice', $P => 'alice-pw'], 'http400'],
	['Auth-Protocol with an escaped CR LF', [with($R => 'imap%0D%0AINJECTED:%201'), $U => 'alice', $P => 'alice-pw'],
		'http400'],

	# Client-IP and Auth-Login-Attempt garbage
	['Client-IP <script>', [with($IP => '<script>'), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['Client-IP out of range', [with($IP => '999.1.1.1'), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['Client-IP list', [with($IP => '127.0.0.1, 10.0.0.1'), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['Client-IP with escaped CR LF', [with($IP => '127.0.0.1%0D%0AINJECTED:%201'), $U => 'alice', $P => 'alice-pw'],
		'refused', { result => qr/^bad-request$/ }],
	['Auth-Login-Attempt garbage', [with($A => '1; DROP'), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['Auth-Login-Attempt negative', [with($A => '-1'), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['Auth-Login-Attempt 2^32', [with($A => '4294967296'), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],
	['Auth-Login-Attempt 20 digits', [with($A => '9' x 20), $U => 'alice', $P => 'alice-pw'], 'refused',
		{ result => qr/^bad-request$/ }],

	# other methods' hostile values
	['SMTP without AUTH, CR LF in the recipient',
		[with($M => 'none', $R => 'smtp'), 'Auth-SMTP-To' => 'RCPT TO:<a@x%0D%0AAuth-Status: OK>'], 'refused'],
	['CRAM-MD5, CR LF in Auth-Salt',
		[with($M => 'cram-md5'), 'Auth-Salt' => '<1.2@x>%0D%0AAuth-Status: OK', $U => 'alice', $P => '0' x 32],
		'refused'],

	# smuggling: a second request in the body of a GET, and an ambiguous body
	['GET with a body holding a second request (HTTP/1.1, close)',
		[with(), $U => 'r70-smuggle', $P => 'x', 'Connection' => 'close', 'Content-Length' => length $smuggled],
		'refused', { version => 'HTTP/1.1', host => 1, result => qr/^unknown-user$/, body => $smuggled }],
	['Content-Length and Transfer-Encoding together',
		[with(), $U => 'alice', $P => 'alice-pw', 'Content-Length' => 5, 'Transfer-Encoding' => 'chunked'],
		'nginx400', { version => 'HTTP/1.1', host => 1, body => "0\r\n\r\n" }],
);

$t->run()->plan(5 * @rows + 42);
$t->waitforsocket('127.0.0.1:' . port(8144));

###############################################################################

my %status_ok = map { $_ => 1 } ('Invalid login or password',
	'Temporary server problem, try again later', 'Relay access denied',
	'[AUTHENTICATIONFAILED] Invalid login or password', '[AUTH] Invalid login or password',
	'[UNAVAILABLE] Temporary server problem, try again later',
	'[SYS/TEMP] Temporary server problem, try again later');
my %headers_ok = map { lc $_ => 1 } qw/ Server Date Content-Type Content-Length Connection
	Auth-Status Auth-Wait Auth-Error-Code Allow /;
my %results = map { $_ => 1 } qw/ ok invalid unknown-user disabled protocol-denied network-denied
	method-denied cert-denied relay-denied rate-limited store-error backend-error bad-request
	scheme-error internal-error /;

# bytes the rows inject, none of which may come back in an answer
my $attacker = qr/INJECTED|DROP|<script>|admin|smuggle|r06-rawlf|\x00|Auth-Status: OK/;

sub request {
	my ($i, $h, $o) = @_;
	my $version = $o->{version} // 'HTTP/1.0';
	my $req = ($o->{method} // 'GET') . " /auth?row=$i $version\r\n";
	$req .= "Host: localhost\r\n" if $o->{host} or $version eq 'HTTP/1.0';
	my @h = @$h;
	while (my ($k, $v) = splice @h, 0, 2) {
		$req .= "$k: $v\r\n";
	}
	$req .= "Content-Length: 0\r\n" if $o->{method} && !grep { $_ eq 'Content-Length' } @$h;
	return $req . "\r\n" . ($o->{body} // '');
}

sub send_raw {
	my ($req, $port) = @_;
	return http($req) // '' if $port == 8080;
	my $s = IO::Socket::INET->new(Proto => 'tcp', PeerAddr => '127.0.0.1:' . port($port))
		or return '';
	return http($req, socket => $s) // '';
}

my $i = 0;
for my $row (@rows) {
	my ($name, $h, $expect, $o) = @$row;
	$o //= {};
	$i++;
	my $r = send_raw(request($i, $h, $o), $o->{port} // 8080);

	my ($head) = split /\r\n\r\n/, $r, 2;
	$head //= '';
	my ($code) = $head =~ /^HTTP\/1\.[01] (\d{3})/;
	$code //= 'none';
	my @responses = $r =~ /^HTTP\/1\.[01] \d{3}/mg;

	my $want = { refused => 200, http400 => 400, http405 => 405, nginx400 => 400,
		nginx405 => 405 }->{$expect};
	is($code, $want, "$name: HTTP $want ($expect)")
		or diag(substr($r, 0, 500));

	unlike($r, qr/^Auth-Status:\s*OK/mi, "$name: never Auth-Status OK");

	# only known headers, a fixed Auth-Status, no control bytes, nothing the attacker chose
	my @bad;
	push @bad, scalar(@responses) . ' responses' if @responses != 1;
	for my $line (split /\r\n/, $head) {
		next if $line =~ /^HTTP\//;
		my ($k, $v) = $line =~ /^([^:]+):\s?(.*)$/ or do { push @bad, "not a header: $line"; next };
		push @bad, "unexpected header $k" unless $headers_ok{lc $k};
		push @bad, "Auth-Status $v" if lc $k eq 'auth-status' && !$status_ok{$v};
		push @bad, "control byte in $k" if $v =~ /[\x00-\x08\x0a-\x1f\x7f]/;
	}
	push @bad, 'a bare CR or LF in the header block' if $head =~ /\r(?!\n)|(?<!\r)\n/;
	push @bad, 'attacker bytes echoed' if $r =~ $attacker;
	if ($expect eq 'refused') {
		push @bad, 'no Auth-Status' unless $head =~ /^Auth-Status: /m;
	}
	ok(!@bad, "$name: safe answer") or diag(join("\n", @bad), "\n", substr($r, 0, 500));

	# the module's lines for this request (nginx appends the request line to each)
	my $method = $o->{method} // 'GET';
	my $tag = qr/request: "\Q$method\E \/auth\?row=$i HTTP\/1\.[01]"/;
	my @lines = grep { /$tag/ } split /\n/, $t->read_file('error.log');
	my @mine = grep { /\bmail_auth: / } @lines;
	if ($expect =~ /^nginx/) {
		is(scalar(@mine), 0, "$name: rejected by nginx before the module: no module line")
			or diag(join "\n", @mine);
		ok(grep({ /\[info\] .*client sent / } @lines), "$name: nginx logged why")
			or diag(join("\n", @lines) || 'no line for the request');
		next;
	}
	is(scalar(@mine), 1, "$name: exactly one module line") or diag(join "\n", @mine);
	my $line = $mine[0] // '';

	my @shape;
	push @shape, 'not printable ASCII' if $line =~ /[^\x20-\x7e]/;
	if ($expect eq 'refused') {
		if ($line =~ /mail_auth: user="((?:[^"\\]|\\x[0-9a-f]{2})*)" client=\S+ protocol=\S+ method=\S+ attempt=\d+ result=(\S+) reason="[^"]*" time=[\d.]+ms/) {
			my ($user, $result) = ($1, $2);
			push @shape, "unknown result $result" unless $results{$result};
			push @shape, 'result=ok' if $result eq 'ok';
			push @shape, "user=\"$user\" !~ $o->{user}" if $o->{user} && $user !~ $o->{user};
			push @shape, "result=$result !~ $o->{result}" if $o->{result} && $result !~ $o->{result};
		} else {
			push @shape, 'not a decision line';
		}
	} elsif ($expect eq 'http400') {
		push @shape, 'not the "not an auth_http request" line' unless $line =~ /mail_auth: not an auth_http request: /;
	} elsif ($expect eq 'http405') {
		push @shape, 'not the "not GET/HEAD" line' unless $line =~ /mail_auth: refused a request that is not GET\/HEAD/;
	}
	ok(!@shape, "$name: the line is well-formed and escaped") or diag(join("\n", @shape), "\n$line");
}

# nothing a row injected became a line of its own in the error log. (Checked before the IMAP
# part below on purpose: nginx mail itself appends the client's login raw to its own log lines,
# ', login: "..."' in ngx_mail_log_error(), so a CR LF sent in an IMAP literal does split
# nginx's "client login failed" line. That is nginx core's, not this module's.)
my @injected = grep { /^(?:INJECTED|Auth-Status|Auth-Method: plain)/ } split /\n/, $t->read_file('error.log');
is(scalar @injected, 0, 'no injected line in the error log') or diag(join "\n", @injected);

# the request hidden in a GET body was discarded with the body, never answered (every row's
# request line carries ?row=N: an untagged one can only be the smuggled request)
my @smuggled = grep { /request: "GET \/auth HTTP/ } split /\n/, $t->read_file('error.log');
is(scalar @smuggled, 0, 'the request in a GET body was never processed') or diag(join "\n", @smuggled);

###############################################################################

# The same kind of input through the real mail proxy. nginx escapes what the client sent
# (%XX for bytes 0x00-0x20 and %), the module must unescape exactly once and refuse. Each
# attempt: a NO for the client, exactly one decision line, the backend not contacted.

# $t is passed in: a named sub closing over it would keep it alive past Test::More's end
sub imap_row {
	my ($t, $name, $send, $user_re) = @_;
	my $from = length $t->read_file('error.log');
	my $s = Test::Nginx::IMAP->new();
	$s->read();
	if (ref $send eq 'ARRAY') {
		# AUTHENTICATE: command, continuation, response
		$s->send($send->[0]);
		$s->read();
		$s->send($send->[1]);
	} else {
		$s->print($send);
	}
	my $answer = $s->read() // '';
	$answer = $s->read() // '' while $answer =~ /^\+ /;
	like($answer, qr/^a1 NO /, "imap $name: refused");
	unlike($answer, qr/INJECTED|\x00/, "imap $name: nothing echoed");
	my @mine;
	wait_for(3, sub {
		@mine = grep { /mail_auth: user=/ } split /\n/, substr($t->read_file('error.log'), $from);
	});
	is(scalar @mine, 1, "imap $name: one decision line") or diag(join "\n", @mine);
	my $line = $mine[0] // '';
	like($line, qr/mail_auth: user="$user_re" .* result=(?!ok)[a-z-]+ reason=/,
		"imap $name: user logged escaped, result not ok") or diag($line);
	# nginx mail sent a valid Client-IP and Auth-Protocol: the decision names the mail client
	like($line, qr/ client=127\.0\.0\.1 protocol=imap method=(plain|login) /,
		"imap $name: the line names the mail client and protocol") or diag($line);
}

imap_row($t, 'quote, backslash, percent, UTF-8 in the user',
	qq{a1 LOGIN "p1\\"q\\\\b%20s\xc3\xa9" "alice-pw"\r\n}, qr/p1\\x22q\\x5cb%20s\\xc3\\xa9/);
imap_row($t, '1000-byte user', 'a1 LOGIN ' . ('u' x 1000) . " alice-pw\r\n", qr/u{256}\.\.\./);
imap_row($t, 'CR LF inside a literal user', "a1 LOGIN {18+}\r\nalice\r\nINJECTED: 1 {8+}\r\nalice-pw\r\n",
	qr/alice\\x0d\\x0aINJECTED: 1/);
imap_row($t, 'NUL at the end of a literal user', "a1 LOGIN {6+}\r\nalice\0 {8+}\r\nalice-pw\r\n",
	qr/alice\\x00/);
imap_row($t, 'NUL inside a literal password', "a1 LOGIN alice {13+}\r\nalice-pw\0junk\r\n", qr/alice/);
imap_row($t, 'AUTHENTICATE PLAIN with a third NUL',
	['a1 AUTHENTICATE PLAIN', encode_base64("\0alice\0alice-pw\0junk", '')], qr/alice/);
imap_row($t, '"%61lice" is not "alice"', "a1 LOGIN %61lice alice-pw\r\n", qr/%61lice/);

my ($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'alice', 'alice-pw');
is($rc, 0, 'imap: good login after all that') or diag($out);
is($t->read_file('backend.log'), "imap ok user=alice pass=alice-pw\n",
	'the backend saw the good login only');

###############################################################################

# nginx is still whole: no worker crashed, and the module answers a good request

like(http(request(++$i, [with(), $U => 'alice', $P => 'alice-pw'], {})) // '', qr/^Auth-Status: OK\r$/m,
	'auth_http: a good request is answered OK at the end');
my $log = $t->read_file('error.log');
unlike($log, qr/exited on signal|panic/, 'no worker crashed, no panic');
is(() = $log =~ /\[alert\]|\[crit\]|\[emerg\]/g, 0, 'no alert, crit or emerg');

###############################################################################
