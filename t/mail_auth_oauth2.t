#!/usr/bin/perl

# Tests for ngx-mail-auth: OAuth 2.0 bearer-token logins (SASL XOAUTH2 and OAUTHBEARER,
# RFC 7628) through freenginx's real mail proxy (1.27.1 sends Auth-Method xoauth2/oauthbearer
# and passes Auth-Error-SASL on to the client): IMAP AUTHENTICATE XOAUTH2/OAUTHBEARER
# (imaplib), SMTP AUTH XOAUTH2/OAUTHBEARER (smtplib), curl --oauth2-bearer (imap, smtp).
# Keys are made by openssl, tokens minted here (t/lib/oauth2_token.py, python3-jwt); valid,
# expired, not yet valid, wrong issuer/audience/key/scope, alg none, HS/RS confusion, user
# mismatch, disabled account, unknown kid, JWKS rotation without reload; a refusal shows the
# client the RFC 7628 error challenge. `nginx -t` refuses a broken mail_auth_oauth2.
# TEST_MAIL_AUTH_FREENGINX: the freenginx binary, TEST_MAIL_AUTH_FREENGINX_SO: the module built
# against it (scripts/test sets both after scripts/freenginx).

###############################################################################

use warnings;
use strict;

use Test::More;
use Fcntl ();
use MIME::Base64 qw/ decode_base64 /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $bin = $ENV{TEST_MAIL_AUTH_FREENGINX};
my $so = $ENV{TEST_MAIL_AUTH_FREENGINX_SO};
plan(skip_all => 'TEST_MAIL_AUTH_FREENGINX(_SO) not set (scripts/test sets them after scripts/freenginx)')
	unless $bin && -x $bin && $so && -f $so;
my $py = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
plan(skip_all => 'openssl, curl or python3-jwt not installed')
	unless have_tool('openssl') && have_tool('curl')
	&& system($py, '-c', 'import jwt, cryptography') == 0;

$Test::Nginx::NGINX = $bin;
my $t = Test::Nginx->new()->has(qw/mail imap smtp http/);
workers_can_read($t);
my $d = $t->testdir();

# keys by openssl
for my $k (qw/ rsa rsa2 rogue /) {
	system('openssl', 'genrsa', '-out', "$d/$k.pem", '2048') == 0 or die "openssl genrsa";
}
system("openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out $d/ec.pem") == 0
	or die "openssl ec";

sub tool {
	my ($rc, $out) = run_tool($py, "$FindBin::Bin/lib/oauth2_token.py", @_);
	die "oauth2_token.py @_[0..1]: $out" if $rc;
	$out =~ s/\s+\z//;
	return $out;
}

# (named subs use $d, never $t: a closure over $t would keep nginx running past the harness's
# end-of-test checks)
sub write_to {
	my ($name, $text) = @_;
	open my $fh, '>', "$d/$name" or die "$name: $!";
	print $fh $text;
	close $fh;
}

sub read_from {
	my ($name) = @_;
	open my $fh, '<', "$d/$name" or return '';
	local $/;
	return <$fh>;
}

sub jwks {
	my ($name, @keys) = @_;
	# written beside, then renamed over: a reader never sees half a file
	write_to("$name.tmp", tool('jwks', @keys));
	rename("$d/$name.tmp", "$d/$name") or die "rename: $!";
}

jwks('jwks.json', "k1=$d/rsa.pem", "e1=$d/ec.pem");

my $iss = 'https://idp.example.test';    # as in nginx-conf/oauth2.conf
my $claims = qq{"iss":"$iss","aud":"mail","scope":"openid mail","exp":"+600","nbf":"-10"};

sub token {
	my ($key, $alg, $kid, $extra, $email) = @_;
	$email //= 'alice@example.org';
	$extra //= "";
	return tool("mint", "$d/$key.pem", $alg, $kid, qq[{$claims,"email":"$email"$extra}]);
}

my $hash = make_hash('openssl-6', 'not used by token logins') or die "openssl passwd";
$t->write_file('users', <<"EOF");
alice\@example.org:${hash}::::::pass=alice-backend
bob\@example.org:${hash}::::::pass=bob-backend nologin
carol\@example.org:$hash
EOF

# The configuration is the example nginx-conf/oauth2.conf as it is: ports moved to free ones,
# pid/error_log the harness's, the module the one built against freenginx.
open my $ex, '<', "$FindBin::Bin/../nginx-conf/oauth2.conf" or die "nginx-conf/oauth2.conf: $!";
my $conf = do { local $/; <$ex> };
close $ex;
$conf =~ s/^\s*(pid|error_log)\s[^;]*;\s*$//mg;
$conf =~ s/^\s*load_module\s+[^;]*ngx_http_mail_auth_module\.so;/load_module $so;/m or die "no load_module";
$conf = "daemon off;\n" . $conf;
$conf =~ s/127\.0\.0\.1:(\d+)/127.0.0.1:%%PORT_$1%%/g;
$conf =~ s/(\n\s*access_log off;)/$1\n    %%TEST_GLOBALS_HTTP%%/;
$t->write_file_expand('nginx.conf', $conf);

$t->run_daemon(\&MailAuthBackend::imap, port(11143), "$d/imap.log", 'alice@example.org' => 'alice-backend');
$t->run_daemon(\&MailAuthBackend::smtp, port(11025), "$d/smtp.log");
$t->run()->plan(56);
$t->waitforsocket('127.0.0.1:' . port($_)) for (11143, 11025);

sub client {
	my ($action, $port, $user, $token) = @_;
	my ($rc, $out) = run_tool('python3', "$FindBin::Bin/lib/oauth2_client.py", $action, '127.0.0.1', port($port),
		$user, $token);
	return ($rc, $out);
}

sub decision {
	my ($re) = @_;
	return wait_for(3, sub { read_from('error.log') =~ qr/mail_auth: .*$re/ });
}

my $challenge = qr/challenge=\{"openid-configuration":"\Q$iss\E\/.well-known\/openid-configuration","scope":"mail","status":"invalid_token"\}/;

###############################################################################

like(`$bin -v 2>&1`, qr{freenginx/1\.27\.}, 'the binary is freenginx 1.27');

# valid tokens, every client and method

my $good = token('rsa', 'RS256', 'k1');
my ($rc, $out) = client('imap-xoauth2', 1143, 'alice@example.org', $good);
is($rc, 0, 'imap xoauth2: valid RS256 token logs in') or diag($out);
ok(wait_for(3, sub { read_from('imap.log') =~ /^imap ok user=alice\@example.org pass=alice-backend$/m }),
	'imap: the backend got the account\'s backend password, not the token');
ok(decision(qr/user="alice\@example.org" .* method=xoauth2 .* result=ok reason="token verified \(claim \\x22email\\x22\)/),
	'logged: method xoauth2, the claim');
unlike(read_from('error.log'), qr/\Q$good\E/, 'the token is never logged');

($rc, $out) = client('imap-oauthbearer', 1143, 'alice@example.org', token('ec', 'ES256', 'e1'));
is($rc, 0, 'imap oauthbearer: valid ES256 token logs in') or diag($out);
ok(decision(qr/method=oauthbearer .* result=ok/), 'logged: method oauthbearer');
my $m = http_get('/metrics', socket => IO::Socket::INET->new('127.0.0.1:' . port(9180)));
like($m // '', qr/^mail_auth_requests_total\{protocol="imap",method="xoauth2",result="ok"\} 1\r?$/m,
	'mail_auth_status counts by method xoauth2');

($rc, $out) = client('imap-xoauth2', 1143, 'ALICE@Example.ORG', $good);
is($rc, 1, 'imap: the claim matches ASCII case-insensitively, but the store has no such spelling')
	or diag($out);

($rc, $out) = client('smtp-xoauth2', 1025, 'alice@example.org', $good);
is($rc, 0, 'smtp xoauth2: valid token') or diag($out);
($rc, $out) = client('smtp-oauthbearer', 1025, 'alice@example.org', $good);
is($rc, 0, 'smtp oauthbearer: valid token') or diag($out);
ok(wait_for(3, sub { read_from('smtp.log') =~ /LOGIN=alice\@example.org/ }),
	'smtp: XCLIENT names the user to the backend') or diag(read_from('smtp.log'));

# (no POP3: freenginx 1.27.1 reads POP3 commands into a fixed 128-byte buffer, so an AUTH
# XOAUTH2/OAUTHBEARER line with a real JWT is refused by nginx as an invalid command before any
# auth_http request; IMAP and SMTP use client_buffer)

# curl --oauth2-bearer

($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--user', 'alice@example.org:', '--oauth2-bearer', $good,
	'--login-options', 'AUTH=XOAUTH2', '-X', 'NOOP', 'imap://127.0.0.1:' . port(1143) . '/');
is($rc, 0, 'curl imap --oauth2-bearer (XOAUTH2)') or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--user', 'alice@example.org:', '--oauth2-bearer', $good,
	'--login-options', 'AUTH=OAUTHBEARER', '-X', 'NOOP', 'imap://127.0.0.1:' . port(1143) . '/');
is($rc, 0, 'curl imap --oauth2-bearer (OAUTHBEARER)') or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--user', 'alice@example.org:', '--oauth2-bearer', $good,
	'--login-options', 'AUTH=XOAUTH2', '--mail-from', 'alice@example.org', '--mail-rcpt', 'bob@example.net',
	'--upload-file', '-', 'smtp://127.0.0.1:' . port(1025) . '/');
is($rc, 0, 'curl smtp --oauth2-bearer (XOAUTH2): a message sent') or diag($out);
($rc, $out) = run_tool('curl', '-sS', '--max-time', '15', '--user', 'alice@example.org:', '--oauth2-bearer', 'x.y.z',
	'--login-options', 'AUTH=XOAUTH2', '-X', 'NOOP', 'imap://127.0.0.1:' . port(1143) . '/');
is($rc, 67, 'curl imap with a bad token: login denied (exit 67)') or diag($out);

# refusals: the client sees the RFC 7628 error challenge, then the failure

my %bad = (
	'expired' => [token('rsa', 'RS256', 'k1', ',"exp":' . (time() - 120)), qr/token expired \(exp\)/],
	'not yet valid' => [token('rsa', 'RS256', 'k1', ',"nbf":' . (time() + 120)), qr/token not yet valid \(nbf\)/],
	'wrong issuer' => [tool('mint', "$d/rsa.pem", 'RS256', 'k1',
		qq[{"iss":"https://evil.test","aud":"mail","scope":"mail","exp":"+600","email":"alice\@example.org"}]),
		qr/wrong issuer \(iss\)/],
	'wrong audience' => [token('rsa', 'RS256', 'k1', ',"aud":"other"'), qr/wrong audience \(aud\)/],
	'wrong key' => [token('rogue', 'RS256', 'k1'), qr/bad signature/],
	'alg none' => [token('rsa', 'none', 'k1'), qr/token alg none not allowed/],
	'HS/RS confusion' => [token('rsa', 'HS256-CONFUSION', 'k1'), qr/token alg HS256 not allowed/],
	'user mismatch' => [token('rsa', 'RS256', 'k1', '', 'mallory@example.org'), qr/token is for another user/],
	'unknown kid' => [token('rsa', 'RS256', 'k9'), qr/unknown kid/],
	# an address the provider has not verified (a user may set alice's on their own profile)
	'unverified email' => [token('rsa', 'RS256', 'k1', ',"email_verified":false'),
		qr/claim \\x22email_verified\\x22 missing or not usable/],
	'garbage' => ['not-a-token', qr/malformed token/],
);

for my $case (sort keys %bad) {
	my ($tok, $why) = @{$bad{$case}};
	($rc, $out) = client('imap-xoauth2', 1143, 'alice@example.org', $tok);
	ok($rc == 1 && $out =~ $challenge, "imap xoauth2, $case: refused with the RFC 7628 challenge") or diag($out);
	ok(decision(qr/result=invalid-token reason="token refused: $why/), "$case: logged as such");
}

# scope missing: insufficient_scope
my $noscope = tool('mint', "$d/rsa.pem", 'RS256', 'k1',
	qq[{"iss":"$iss","aud":"mail","scope":"openid","exp":"+600","email":"alice\@example.org"}]);
($rc, $out) = client('imap-oauthbearer', 1143, 'alice@example.org', $noscope);
like($out, qr/^FAIL challenge=\{.*"status":"insufficient_scope"\}/, 'oauthbearer, scope not granted: insufficient_scope');

# SMTP: 334 challenge, then 535 5.7.8
($rc, $out) = client('smtp-xoauth2', 1025, 'alice@example.org', $bad{'wrong key'}[0]);
like($out, qr/^FAIL $challenge 535 5\.7\.8 /, 'smtp xoauth2, bad token: the challenge, then 535 5.7.8') or diag($out);

# accounts: disabled, no backend password (IMAP needs one), unknown
($rc, $out) = client('imap-xoauth2', 1143, 'bob@example.org', token('rsa', 'RS256', 'k1', '', 'bob@example.org'));
ok($rc == 1 && $out =~ /challenge=.*invalid_token/, 'disabled account: refused with the challenge') or diag($out);
ok(decision(qr/user="bob\@example.org" .* result=disabled/), 'disabled account logged');
($rc, $out) = client('imap-xoauth2', 1143, 'carol@example.org', token('rsa', 'RS256', 'k1', '', 'carol@example.org'));
is($rc, 1, 'no backend password for IMAP: refused') or diag($out);
ok(decision(qr/user="carol\@example.org" .* result=method-denied/), 'logged as method-denied');
($rc, $out) = client('smtp-xoauth2', 1025, 'carol@example.org', token('rsa', 'RS256', 'k1', '', 'carol@example.org'));
is($rc, 0, 'SMTP needs no backend password (XCLIENT)') or diag($out);
($rc, $out) = client('imap-xoauth2', 1143, 'dave@example.org', token('rsa', 'RS256', 'k1', '', 'dave@example.org'));
ok($rc == 1 && decision(qr/user="dave\@example.org" .* result=unknown-user/), 'a valid token for an account the store lacks: unknown-user')
	or diag($out);

# JWKS rotation without reload: k2 replaces k1
jwks('jwks.json', "k2=$d/rsa2.pem");
select undef, undef, undef, 1.2;
($rc, $out) = client('imap-xoauth2', 1143, 'alice@example.org', token('rsa2', 'RS256', 'k2'));
is($rc, 0, 'rotation: a token of the new key is accepted without a reload') or diag($out);
($rc, $out) = client('imap-xoauth2', 1143, 'alice@example.org', $good);
ok($rc == 1 && decision(qr/reason="token refused: unknown kid/), 'rotation: the old key is gone') or diag($out);

# every key revoked at once: a JWKS that parses but holds no usable key (an empty set, or only
# keys of a kind the module does not use) is the key set; the keys it dropped are not kept
write_to('jwks.json.tmp', '{"keys":[{"kid":"p521","kty":"EC","crv":"P-521","x":"AA","y":"AA","use":"sig"}]}');
rename("$d/jwks.json.tmp", "$d/jwks.json") or die "rename: $!";
select undef, undef, undef, 1.2;
($rc, $out) = client('imap-xoauth2', 1143, 'alice@example.org', token('rsa2', 'RS256', 'k2'));
is($rc, 1, 'all keys revoked: a token of a dropped key is refused') or diag($out);
ok(wait_for(3, sub { read_from('error.log') =~ /JWKS file .*no usable key/ }), 'all keys revoked: logged');
jwks('jwks.json', "k2=$d/rsa2.pem");

# a FIFO renamed over the JWKS file: the watcher read it holding the lock every token login takes
# on the event loop, and the open waited for a writer for ever (the worker answered nothing more);
# it is refused now, without waiting, and the keys kept
select undef, undef, undef, 1.2;
system('mkfifo', "$d/jwks.fifo") == 0 or die "mkfifo failed\n";
link("$d/jwks.fifo", "$d/fifo.keep") or die "link: $!";
rename("$d/jwks.fifo", "$d/jwks.json") or die "rename: $!";
select undef, undef, undef, 1.5;
($rc, $out) = client('imap-xoauth2', 1143, 'alice@example.org', token('rsa2', 'RS256', 'k2'));
is($rc, 0, 'a FIFO at the JWKS path: the keys kept, a token logs in') or diag($out);
ok(wait_for(3, sub { read_from('error.log') =~ /JWKS file .*not a regular file.*keeping/ }), 'a FIFO: logged');
jwks('jwks.json', "k2=$d/rsa2.pem");
# (a reader still waiting on the FIFO, as the old watcher did, is let go)
if (sysopen(my $w, "$d/fifo.keep", Fcntl::O_WRONLY() | Fcntl::O_NONBLOCK())) { close $w; }

# nginx -t refuses a broken configuration
sub nginx_t {
	my ($directive, $store) = @_;
	(my $conf = read_from('nginx.conf')) =~ s/mail_auth_oauth2 [^;]*;/$directive/;
	$conf =~ s/mail_auth_passwd_file [^;]*;/$store/ if defined $store;
	write_to('test.conf', $conf);
	return run_tool($bin, '-t', '-p', "$d/", '-c', 'test.conf', '-e', 'test-error.log', '-g', "pid $d/test.pid;");
}
($rc, $out) = nginx_t("mail_auth_oauth2 jwks=$d/absent.json issuer=x audience=y;");
ok($rc != 0 && $out =~ /mail_auth_oauth2: JWKS file/, 'nginx -t: a missing JWKS file is an error') or diag($out);
($rc, $out) = nginx_t('mail_auth_oauth2 jwks=jwks.json audience=y;');
ok($rc != 0 && $out =~ /issuer=ISS is required/, 'nginx -t: issuer required') or diag($out);
($rc, $out) = nginx_t("mail_auth_oauth2 jwks=$d/jwks.json issuer=x audience=y;");
is($rc, 0, 'nginx -t: a good one passes') or diag($out);
($rc, $out) = nginx_t("mail_auth_oauth2 jwks=$d/jwks.json issuer=x audience=y;",
	'mail_auth_basic_header on; auth_basic mail; auth_basic_user_file users;');
ok($rc != 0 && $out =~ /"mail_auth_oauth2" needs a store/, 'nginx -t: not in a Basic-bridge location without a store')
	or diag($out);

###############################################################################
