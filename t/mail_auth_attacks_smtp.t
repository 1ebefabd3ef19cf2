#!/usr/bin/perl

# Attack tests for ngx-mail-auth: SMTP.
#
#   7. The relay policy reads the real recipient domain. SMTP without AUTH ("smtp_auth none")
#      to an MX backend for mail_auth_relay_domains example.org only: a recipient whose text
#      merely contains "example.org" before its real domain ("x@example.org>"@evil.com, a
#      quoted local part, a source route), an address literal and junk after the ">" are
#      refused (5xx; the first exactly 550 5.7.1, through the proxy and in the direct
#      auth_http answer); <u@example.org>, <u@EXAMPLE.ORG.> and an ESMTP parameter after
#      the address are accepted.
#  11. SMTP CRAM-MD5 and EXTERNAL work with "proxy_smtp_auth on": nginx then logs in to the
#      backend with AUTH PLAIN and needs a password from auth_http (Auth-Pass) for methods
#      where it has none of its own; the backend must receive AUTH with the account's password.
#  12. Documentation and code agree:
#      (a) "mail_auth_relay_domains .example.org" accepts example.org and its subdomains
#          (nginx's convention for a leading dot);
#      (b) with mail_auth_master_user and "xclient on", the backend's XCLIENT LOGIN= names
#          the user, not "user*master" (with proxy_smtp_auth on the backend's AUTH is shown);
#      (c) the decision log line escapes once: a user name with a double quote is logged as
#          \x22 in user="..." and nowhere as \x5cx22 (an escape escaped again).

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::SMTP;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;
use MailAuthAttack;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail smtp http mail_ssl/);
workers_can_read($t);
plan(skip_all => 'openssl, htpasswd or doveadm not installed')
	unless have_tool('openssl') && have_tool('htpasswd') && have_tool('doveadm');
plan(skip_all => 'python3 with smtplib not installed')
	unless system('python3 -c "import smtplib, ssl" 2>/dev/null') == 0;

my $d = $t->testdir();

make_server_cert($t);
make_client_cert($t, 'dave');

my %pw = (alice => 'alice pw', bob => 'bob pw', carol => 'carol pw', dave => 'dave pw',
	quote => 'quote pw');
my $bcrypt = make_hash('htpasswd-B', $pw{bob});
my $cram = make_hash('doveadm-CRAM-MD5', $pw{carol});
$t->write_file('users', <<"EOF");
alice:{PLAIN}$pw{alice}
bob:$bcrypt
carol:$cram
dave:{PLAIN}$pw{dave}
a"b:{PLAIN}$pw{quote}
EOF

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_passwd_file %%TESTDIR%%/users;
    mail_auth_backend smtp 127.0.0.1:8026;
    mail_auth_backend mx 127.0.0.1:8028;
    mail_auth_fail_wait 0s;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_relay_domains example.org;
        }

        location = /auth-dot {
            mail_auth;
            mail_auth_relay_domains .example.org;
        }

        location = /auth-master {
            mail_auth;
            mail_auth_master_user master "master pw";
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    # relay: SMTP without AUTH, to the MX for accepted domains
    server {
        listen     127.0.0.1:8025;
        protocol   smtp;
        smtp_auth  none;
        xclient    on;
    }

    server {
        listen     127.0.0.1:8030;
        protocol   smtp;
        smtp_auth  none;
        auth_http  127.0.0.1:8080/auth-dot;
    }

    # submission: nginx logs in to the backend itself
    server {
        listen     127.0.0.1:8587;
        protocol   smtp;
        smtp_auth  cram-md5 login plain;
        xclient    off;
        proxy_smtp_auth on;
    }

    server {
        listen     127.0.0.1:8465 ssl;
        protocol   smtp;
        smtp_auth  external;
        xclient    off;
        proxy_smtp_auth on;

        ssl_certificate         server.crt;
        ssl_certificate_key     server.key;
        ssl_client_certificate  ca.crt;
        ssl_verify_client       on;
    }

    # master user: XCLIENT, and AUTH to the backend
    server {
        listen     127.0.0.1:8588;
        protocol   smtp;
        smtp_auth  plain login cram-md5;
        xclient    on;
        auth_http  127.0.0.1:8080/auth-master;
    }

    server {
        listen     127.0.0.1:8589;
        protocol   smtp;
        smtp_auth  plain login cram-md5;
        xclient    off;
        proxy_smtp_auth on;
        auth_http  127.0.0.1:8080/auth-master;
    }
}

EOF

my %backend = (alice => $pw{alice}, bob => $pw{bob}, dave => $pw{dave},
	'bob*master' => 'master pw', 'carol*master' => 'master pw', carol => $pw{carol});
$t->run_daemon(\&MailAuthBackend::smtp, port(8026), "$d/submission.log", %backend);
$t->run_daemon(\&MailAuthBackend::smtp, port(8028), "$d/mx.log", %backend);
$t->run()->plan(44);
$t->waitforsocket('127.0.0.1:' . port($_)) for (8026, 8028);

# (named subs use $d, never $t: a closure over $t would keep nginx running past the
# harness's end-of-test checks)
sub logged {
	my ($file, $re) = @_;
	return wait_for(3, sub {
		open my $fh, '<', "$d/$file" or return 0;
		local $/;
		return <$fh> =~ $re;
	});
}

sub file_text {
	my ($file) = @_;
	open my $fh, '<', "$d/$file" or return '';
	local $/;
	return <$fh> // '';
}

###############################################################################

# 7. relay policy: the recipient's real domain

# the reply to RCPT TO through the proxy (a new SMTP session each)
sub rcpt_reply {
	my ($port, $rcpt) = @_;
	my $s = Test::Nginx::SMTP->new(PeerAddr => '127.0.0.1:' . port($port));
	$s->read();
	$s->send('EHLO client.test');
	$s->read();
	$s->send('MAIL FROM:<sender@elsewhere.example>');
	$s->read();
	$s->send("RCPT TO:$rcpt");
	my $r = $s->read() // '(no answer)';
	$r =~ s/\s+\z//;
	return $r;
}

# the direct auth_http answer for a recipient, as nginx asks at RCPT TO: (status, error code)
sub relay_answer {
	my ($uri, $rcpt, %extra) = @_;
	my %to = $extra{'auth-smtp-to'} ? %extra : ('Auth-SMTP-To' => "RCPT TO:$rcpt");
	my ($a) = timed_auth(port(8080), $uri, 'Auth-Method' => 'none', 'Auth-Protocol' => 'smtp',
		'Auth-User' => '', 'Auth-Pass' => '', 'Auth-SMTP-Helo' => 'client.test',
		'Auth-SMTP-From' => 'MAIL FROM:<sender@elsewhere.example>', %to);
	my ($st) = $a =~ /^Auth-Status: (.*?)\r$/m;
	my ($code) = $a =~ /^Auth-Error-Code: (.*?)\r$/m;
	return ($st // 'none', $code // '');
}

my $evil = '<"x@example.org>"@evil.com>';
like(rcpt_reply(8025, $evil), qr/^550 5\.7\.1 /, "proxy: RCPT TO:$evil refused with 550 5.7.1");
my ($st, $code) = relay_answer('/auth', $evil);
ok($st ne 'OK' && $code =~ /^550 5\.7\.1/, "auth_http: $evil refused with 550 5.7.1")
	or diag("Auth-Status: $st, Auth-Error-Code: $code");

for my $rcpt ('<"x@example.org"@evil.com>', '<@example.org:u@evil.com>', '<u@[127.0.0.1]>',
	'<u@example.org>junk', '<u@example.org>x@evil.com')
{
	like(rcpt_reply(8025, $rcpt), qr/^5\d\d /, "proxy: RCPT TO:$rcpt refused");
	($st, $code) = relay_answer('/auth', $rcpt);
	ok($st ne 'OK' && $code =~ /^5\d\d /, "auth_http: $rcpt refused")
		or diag("Auth-Status: $st, Auth-Error-Code: $code");
}

# the percent hack, the bang path and an address quoted in the local part: an MX routes them
# on from a domain of its own (Postfix's allow_percent_hack, swap_bangpath and
# resolve_dequoted_address, on by default); they were relayed
for my $rcpt ('<u%evil.com@example.org>', '<evil.com!u@example.org>', '<"x@evil.com"@example.org>',
	'<"x\\@evil.com"@example.org>')
{
	($st, $code) = relay_answer('/auth', $rcpt);
	ok($st ne 'OK' && $code =~ /^550 5\.7\.1/, "auth_http: $rcpt refused") or diag("Auth-Status: $st, Auth-Error-Code: $code");
}
like(rcpt_reply(8025, '<"x@evil.com"@example.org>'), qr/^550 5\.7\.1 /,
	'proxy: RCPT TO:<"x@evil.com"@example.org> refused with 550 5.7.1');

# the recipient headers spelled otherwise than nginx spells them (a reverse-DNS name with line
# ends in Client-Host adds lower-cased ones, and one with an empty line cuts the real ones off)
($st, $code) = relay_answer('/auth', '<u@evil.com>', 'auth-smtp-to' => 'RCPT TO:<u@example.org>');
isnt($st, 'OK', 'auth_http: an injected "auth-smtp-to" for a relayed domain is not taken');

# the forms above, ending in the relayed domain: the MX routes them there, so they are relayed
for my $rcpt ('<u@example.org>', '<u@EXAMPLE.ORG.>', '<u@example.org> NOTIFY=NEVER',
	'<"x y"@example.org>', '<@evil.com:u@example.org>')
{
	like(rcpt_reply(8025, $rcpt), qr/^250 /, "proxy: RCPT TO:$rcpt accepted (the MX answers)");
}

###############################################################################

# 11. CRAM-MD5 and EXTERNAL with proxy_smtp_auth on: the backend gets AUTH with a password

my ($rc, $out) = sasl_client('smtp-cram', '127.0.0.1', port(8587), 'alice', $pw{alice});
is($rc, 0, 'proxy_smtp_auth: SMTP CRAM-MD5 login ({PLAIN} account) succeeds end to end')
	or diag($out);
ok(logged('submission.log', qr/^smtp ok user=alice pass=\Q$pw{alice}\E$/m),
	'proxy_smtp_auth: the backend got AUTH with the account\'s password')
	or diag(file_text('submission.log'), grep { /password/ } split /\n/, file_text('error.log'));

($rc, $out) = MailAuthTest::python_client('smtp_external.py', '127.0.0.1', port(8465),
	"$d/ca.crt", "$d/dave.crt", "$d/dave.key");
is($rc, 0, 'proxy_smtp_auth: SMTP AUTH EXTERNAL with a client certificate succeeds end to end')
	or diag($out);
ok(logged('submission.log', qr/^smtp ok user=dave pass=\Q$pw{dave}\E$/m),
	'proxy_smtp_auth: EXTERNAL: the backend got AUTH as the certificate\'s CN with its password');

# {CRAM-MD5} with a master user: the password for the backend is the master's
($rc, $out) = sasl_client('smtp-cram', '127.0.0.1', port(8589), 'carol', $pw{carol});
is($rc, 0, 'proxy_smtp_auth + master user: CRAM-MD5 login of a {CRAM-MD5} account succeeds')
	or diag($out);
ok(logged('submission.log', qr/^smtp ok user=carol\*master pass=master pw$/m),
	'proxy_smtp_auth + master user: the backend got AUTH as carol*master');

# wrong answers stay refused
($rc, $out) = sasl_client('smtp-cram', '127.0.0.1', port(8587), 'alice', 'wrong');
like($out, qr/^FAIL 535 /, 'proxy_smtp_auth: wrong CRAM-MD5 response gets 535') or diag($out);

###############################################################################

# 12(a) ".example.org": the domain itself and its subdomains

for my $to ('<u@example.org>', '<u@sub.example.org>') {
	($st, $code) = relay_answer('/auth-dot', $to);
	is($st, 'OK', ".example.org: $to accepted") or diag("Auth-Error-Code: $code");
}
for my $to ('<u@badexample.org>', '<u@example.org.evil.com>') {
	($st, $code) = relay_answer('/auth-dot', $to);
	ok($st ne 'OK' && $code =~ /^550 5\.7\.1/, ".example.org: $to refused")
		or diag("Auth-Status: $st, Auth-Error-Code: $code");
}
like(rcpt_reply(8030, '<u@example.org>'), qr/^250 /,
	'.example.org through the proxy: <u@example.org> accepted');

# 12(b) master user and XCLIENT: the backend learns who logged in

($rc, $out) = real_client('smtp', '127.0.0.1', port(8588), 'bob', $pw{bob});
is($rc, 0, 'master user, xclient on: AUTH PLAIN login') or diag($out);
ok(logged('submission.log', qr/^smtp xclient user=bob xclient=/m),
	'master user, xclient on: XCLIENT LOGIN=bob (the user, not bob*master)')
	or diag(join '', file_text('submission.log') =~ /^(smtp xclient .*\n)/mg);
# (a {PLAIN} account: its own password can serve the backend; a {CRAM-MD5} one needs the
# master login for proxy_smtp_auth, tested above, so it is not asked to do both here)
($rc, $out) = sasl_client('smtp-cram', '127.0.0.1', port(8588), 'alice', $pw{alice});
is($rc, 0, 'master user, xclient on: CRAM-MD5 login of a {PLAIN} account') or diag($out);
ok(logged('submission.log', qr/^smtp xclient user=alice xclient=/m),
	'master user, xclient on: XCLIENT LOGIN=alice after CRAM-MD5')
	or diag(join '', file_text('submission.log') =~ /^(smtp xclient .*\n)/mg);

# with proxy_smtp_auth on the backend's AUTH is either the user's own or the master login
($rc, $out) = real_client('smtp', '127.0.0.1', port(8589), 'bob', $pw{bob});
is($rc, 0, 'master user, proxy_smtp_auth on: AUTH PLAIN login succeeds end to end') or diag($out);
my ($auth) = file_text('submission.log') =~ /^smtp \w+ (user=bob\S* pass=.*)$/m;
diag('master user, proxy_smtp_auth on: the backend got AUTH ' . ($auth // '(none)'));

# 12(c) one escaping in the log line

my ($ans) = timed_auth(port(8080), '/auth-master', 'Auth-User' => 'a"b',
	'Auth-Pass' => 'quote%20pw', 'Auth-Protocol' => 'smtp');
like($ans, qr/^Auth-Status: OK\r$/m, 'user a"b (from a passwd-file) logs in');
my $quoted = qr/^(.*mail_auth: user="a\\x22b" .*result=ok .*)$/m;
wait_for(3, sub { file_text('error.log') =~ $quoted });
my ($line) = file_text('error.log') =~ $quoted;
ok($line, 'log: the user a"b appears as user="a\x22b"') or diag(file_text('error.log') =~ /^(.*mail_auth: .*)$/mg);
unlike($line // '', qr/\\x5cx/, 'log: the reason does not escape an escape again (no \x5cx22)');
timed_auth(port(8080), '/auth', 'Auth-Method' => 'none', 'Auth-Protocol' => 'smtp',
	'Auth-User' => '', 'Auth-Pass' => '', 'Auth-SMTP-From' => 'MAIL FROM:<q"s@elsewhere.example>',
	'Auth-SMTP-To' => 'RCPT TO:<q"r@example.org>');
my @double = file_text('error.log') =~ /^(.*mail_auth: .*\\x5cx.*)$/mg;
is(join("\n", @double), '', 'log: no decision line escapes an escape (relay addresses with a quote too)');

###############################################################################
