#!/usr/bin/perl

# Every example in nginx-conf/ is started here, so the examples cannot rot: the file is taken as
# it is, with only its ports moved to free ones, its pid/error_log replaced by the harness's and
# its load_module line by TEST_GLOBALS; `nginx -t` must pass, then one real IMAP login (Python
# imaplib) goes through the example's mail proxy to a fake backend.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

# (an example marked "requires: ..." needs what this test does not have: freenginx's mail proxy,
# a database server; the test named there runs it)
my @examples = grep { open my $fh, '<', $_ or die; local $/; <$fh> !~ /^# requires: /m }
	sort glob("$FindBin::Bin/../nginx-conf/*.conf");
plan(skip_all => 'no examples') unless @examples;
plan(skip_all => 'htpasswd or openssl not installed') unless have_tool('htpasswd') && have_tool('openssl');
{
	my $probe = Test::Nginx->new();
	plan(skip_all => 'nginx without mail/imap') unless $probe->has_module('mail')
		and $probe->has_module('imap');
}

# per example: nginx -t, one login; plus the harness's two checks (alerts, sanitizer) each
my $with_status = grep { open my $fh, '<', $_ or die; local $/; <$fh> =~ /mail_auth_status;/ } @examples;
# an example with a proxy_protocol listener on 1144: a login through it as a balancer would
my $with_pp = grep { open my $fh, '<', $_ or die; local $/; <$fh> =~ /:1144 proxy_protocol;/ } @examples;
my $with_tls_policy = grep { open my $fh, '<', $_ or die; local $/; <$fh> =~ /^\s*mail_auth_require_tls\s.*pop3/m } @examples;
# an example with a bans location on 9182: a ban made, listed, lifted
my $with_bans = grep { open my $fh, '<', $_ or die; local $/; <$fh> =~ /^\s*mail_auth_limit_bans;/m } @examples;
plan(tests => 4 * @examples + $with_status + 2 * $with_pp + $with_tls_policy + 4 * $with_bans + 1);

# the point of the bridge: no set_misc / NDK directive in any example (comments aside)
my @third_party = grep { /^\s*[^#\s]*\b(set_unescape_uri|set_encode_base64|set_decode_base64|set_by_lua|ndk_set_var_value)\b/m }
	map { open my $f, '<', $_ or die; local $/; <$f> } @examples;
is(scalar @third_party, 0, 'no set_misc or NDK directive in the examples');

for my $file (@examples) {
	my ($name) = $file =~ m!([^/]+)\.conf$!;

	open my $fh, '<', $file or die "$file: $!\n";
	my $conf = do { local $/; <$fh> };
	close $fh;

	$conf =~ s/^\s*(pid|error_log)\s[^;]*;\s*$//mg;
	$conf = "%%TEST_GLOBALS%%\n" . $conf
		unless $conf =~ s/^\s*load_module\s+[^;]*ngx_http_mail_auth_module\.so;/%%TEST_GLOBALS%%/m;
	$conf = "daemon off;\n" . $conf;
	$conf =~ s/127\.0\.0\.1:(\d+)/127.0.0.1:%%PORT_$1%%/g;
	# unix sockets into the test's directory
	$conf =~ s!unix:/run/([\w.-]+)!unix:%%TESTDIR%%/$1!g;
	$conf =~ s/(Auth-Port\s+)(\d+)/$1%%PORT_$2%%/g;

	my $t = Test::Nginx->new();
	workers_can_read($t);
	my $d = $t->testdir();
	mkdir "$d/logs";
	system('htpasswd', '-cbB', '-C', '5', "$d/users.htpasswd", 'alice', 'alice-secret') == 0
		or die "htpasswd failed\n";
	if ($conf =~ /users\.db/) {
		my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";
		system($tool, '--sqlite', "$d/users.db", 'init') == 0
			and system($tool, '--sqlite', "$d/users.db", 'add', 'alice',
				'--password', 'alice-secret', '--cost', '5') == 0
			or die "mail-auth-user failed\n";
		# (the tool makes a new database 0640; the workers may not run as its owner)
		chmod 0644, "$d/users.db";
	}
	# an example with TLS listeners: a test CA (ca.crt) and a server certificate (server.crt)
	make_server_cert($t) if $conf =~ /^\s*ssl_certificate\s/m;
	$t->write_file_expand('nginx.conf', $conf);

	my $rc = system("$Test::Nginx::NGINX -t -q -p $d/ -c nginx.conf -e error.log "
		. "2> $d/nginx-t.log");
	is($rc, 0, "$name: nginx -t") or diag($t->read_file('nginx-t.log'));

	$t->run_daemon(\&MailAuthBackend::imap, port(11143), "$d/backend.log",
		alice => 'alice-secret');
	$t->run_daemon(\&MailAuthBackend::http_auth, port(9181), "$d/http-auth.log",
		'Basic YWxpY2U6YWxpY2Utc2VjcmV0');
	$t->run();
	$t->waitforsocket('127.0.0.1:' . port(11143));
	$t->waitforsocket('127.0.0.1:' . port(9181));
	$t->waitforsocket('127.0.0.1:' . port(1143));

	my ($code, $out) = real_client('imap', '127.0.0.1', port(1143), 'alice', 'alice-secret');
	is($code, 0, "$name: IMAP login through the example") or diag($out);
	if ($conf =~ /location = (\S+) \{\s*mail_auth_status;/) {
		my $m = http_get($1, socket => IO::Socket::INET->new('127.0.0.1:' . port(9180)));
		like($m // '', qr/^mail_auth_requests_total\{protocol="imap",method="plain",result="ok"\} 1\r?$/m,
			"$name: $1 counted the login");
	}
	if ($conf =~ /:%%PORT_1144%% proxy_protocol;/) {
		# (t/lib/proxy_client.py: a PROXY v1 header from 127.0.0.1 naming 127.0.0.66, then imaplib)
		open my $pc, '-|', 'python3', "$FindBin::Bin/lib/proxy_client.py", 'imap', port(1144),
			'127.0.0.66', 'alice', 'alice-secret' or die "python3: $!\n";
		my $pout = do { local $/; <$pc> } // '';
		close $pc;
		is($? >> 8, 0, "$name: IMAP login through the proxy_protocol listener") or diag($pout);
		like($t->read_file('error.log'), qr/mail_auth: user="alice" client=127\.0\.0\.66 .*result=ok/,
			"$name: the module saw the client the balancer named");
	}
	if ($conf =~ /^\s*mail_auth_limit_bans;/m && $conf =~ m!unix:%%TESTDIR%%/([\w.-]+):/auth!) {
		# ten wrong passwords from 127.0.0.2 (auth_http as nginx mail sends it) ban its /24,
		# which holds 127.0.0.1 too
		my $sock = "$d/$1";
		for my $n (1 .. 10) {
			system('curl', '-s', '-o', '/dev/null', '--unix-socket', $sock, '-H', 'Auth-Method: plain',
				'-H', 'Auth-User: alice', '-H', "Auth-Pass: wrong-$n", '-H', 'Auth-Protocol: imap',
				'-H', 'Auth-Login-Attempt: 1', '-H', 'Client-IP: 127.0.0.2', 'http://localhost/auth');
		}
		my $bans = 'http://127.0.0.1:' . port(9182) . '/bans';
		my $list = `curl -s $bans`;
		like($list, qr/"client":"127\.0\.0\.0\/24"/, "$name: the ban of 127.0.0.0/24 is listed");
		my ($c1) = real_client('imap', '127.0.0.1', port(1143), 'alice', 'alice-secret');
		isnt($c1, 0, "$name: banned: a right login from 127.0.0.1 (same /24) is refused");
		my $lift = `curl -s -X DELETE '$bans?client=127.0.0.2'`;
		like($lift, qr/"lifted":[1-9]/, "$name: DELETE ?client= lifts it");
		my ($c2, $o2) = real_client('imap', '127.0.0.1', port(1143), 'alice', 'alice-secret');
		is($c2, 0, "$name: after the lift the login goes through, no reload") or diag($o2);
	}
	if ($conf =~ /^\s*mail_auth_require_tls\s.*pop3/m) {
		# its POP3 listener (STARTTLS offered, not used here) refuses a cleartext login
		my ($c, $o) = real_client('pop3', '127.0.0.1', port(1110), 'alice', 'alice-secret');
		like($o, qr/^FAIL .*-ERR \[AUTH\] Encryption required/, "$name: cleartext POP3 login refused");
	}
	$t->stop();
	$t->stop_daemons();
}

###############################################################################
