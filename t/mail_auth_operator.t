#!/usr/bin/perl

# Tests for ngx-mail-auth: what an operator touches, through the real nginx with two workers:
#   a) mail_auth_limit_bans refuses lifts a web browser sends (Origin / Sec-Fetch-Site): a page
#      in an administrator's browser could otherwise lift any ban with a cross-site POST
#   b) nginx -t warns, as nginx does for allow/set_real_ip_from, when a network of
#      mail_auth_limit_exempt or mail_auth_real_ip_from has address bits below its prefix (the
#      rule silently covers the whole network: 10.1.2.3/1 is half of IPv4)

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
        server_name  localhost;

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
        }
    }
}

EOF

$t->run()->plan(12);

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

###############################################################################

