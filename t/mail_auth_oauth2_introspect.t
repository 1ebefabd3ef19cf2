#!/usr/bin/perl

# Tests for ngx-mail-auth: OAuth 2.0 opaque bearer tokens checked by RFC 7662 introspection
# (mail_auth_oauth2 introspect= client_id= client_secret_file=) through freenginx's real mail
# proxy (IMAP AUTHENTICATE XOAUTH2/OAUTHBEARER, imaplib). A small loopback introspection
# endpoint (t/lib/oauth2_introspect.py) is started and stopped by the test and counts the
# requests it gets: active token (login), inactive and expired (refused with the RFC 7628
# challenge), wrong client credentials and an endpoint that is down (temporary failures, the
# log says why), a second login answered by mail_auth_cache (no request to the endpoint).
# JWKS and introspection together: a JWT still goes the local path, an opaque token to the
# endpoint. TEST_MAIL_AUTH_FREENGINX / TEST_MAIL_AUTH_FREENGINX_SO as for mail_auth_oauth2.t.

###############################################################################

use warnings;
use strict;

use Test::More;

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
plan(skip_all => 'openssl or python3-jwt not installed')
	unless have_tool('openssl') && system($py, '-c', 'import jwt, cryptography') == 0;

$Test::Nginx::NGINX = $bin;
# TEST_NGINX_GLOBALS loads the module built for the other nginx: this one loads its own ($so)
delete $ENV{TEST_NGINX_GLOBALS};
my $t = Test::Nginx->new()->has(qw/mail imap http/);
workers_can_read($t);
my $d = $t->testdir();

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

sub tool {
	my ($rc, $out) = run_tool($py, "$FindBin::Bin/lib/oauth2_token.py", @_);
	die "oauth2_token.py @_[0..1]: $out" if $rc;
	$out =~ s/\s+\z//;
	return $out;
}

system('openssl', 'genrsa', '-out', "$d/rsa.pem", '2048') == 0 or die "openssl genrsa";
write_to('jwks.json', tool('jwks', "k1=$d/rsa.pem"));
# a location of its own, asked only once its JWKS changed: k1 and k2 when nginx starts
system('openssl', 'genrsa', '-out', "$d/rsa2.pem", '2048') == 0 or die "openssl genrsa";
write_to('jwks-fresh.json', tool('jwks', "k1=$d/rsa.pem", "k2=$d/rsa2.pem"));

my $iss = 'https://idp.example.test';
my $now = time();
sub answer {
	my ($user, $exp, $scope) = @_;
	return qq{{"active":true,"username":"$user","exp":$exp,"iss":"$iss","aud":"mail","scope":"$scope"}};
}
my %db = (
	'opaque-active' => answer('alice@example.org', $now + 600, 'openid mail'),
	'opaque-cached' => answer('alice@example.org', $now + 600, 'mail'),
	'opaque-expired' => answer('alice@example.org', $now - 600, 'mail'),
	'opaque-bob' => answer('bob@example.org', $now + 600, 'mail'),
	'opaque-noscope' => answer('alice@example.org', $now + 600, 'openid'),
	# short opaque tokens fit freenginx's 128-byte POP3 command line (a JWT does not)
	'pop-ok' => answer('alice@example.org', $now + 600, 'mail'),
	'pop-old' => answer('alice@example.org', $now - 600, 'mail'),
);
write_to('db.json', '{' . join(',', map { qq{"$_":$db{$_}} } sort keys %db) . '}');
write_to('secret', "s3cret\n");
write_to('wrong-secret', "not-the-secret\n");

my $hash = make_hash('openssl-6', 'not used by token logins') or die "openssl passwd";
write_to('users', "alice\@example.org:${hash}::::::pass=alice-backend\n");

my $oauth = "jwks=jwks.json issuer=$iss audience=mail scope=mail client_id=mail-proxy";
my $location = sub {
	my ($name, $port, $secret, $cache) = @_;
	return <<"END";
        location /$name {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8143%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8110%%;
            mail_auth_fail_wait 0s;
            $cache
            mail_auth_oauth2 $oauth
                             introspect=http://127.0.0.1:%%PORT_${port}%%/introspect
                             client_secret_file=$secret;
        }
END
};
my $mail = sub {
	my ($port, $name) = @_;
	return <<"END";
    server {
        listen 127.0.0.1:%%PORT_${port}%%;
        protocol imap;
        imap_auth xoauth2 oauthbearer;
        auth_http 127.0.0.1:%%PORT_8080%%/$name;
    }
END
};

$t->write_file_expand('nginx.conf', <<"END");

%%TEST_GLOBALS%%

daemon off;
load_module $so;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen 127.0.0.1:%%PORT_8080%%;
        # one zone for the server's locations
        mail_auth_cache zone=tokens:1m ttl=300s negative_ttl=60s;
@{[ $location->('auth', 8081, 'secret', '') ]}
@{[ $location->('auth-badcred', 8081, 'wrong-secret', '') ]}
@{[ $location->('auth-down', 8082, 'secret', '') ]}
        # the limiter: the same refused token repeated by one client is refused without a
        # check after a few, as a repeated wrong password is (limits far above the test's load)
        location /auth-limited {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8143%%;
            mail_auth_fail_wait 0s;
            mail_auth_limit zone=token_limit:1m ip=100/m user=100/m;
            mail_auth_oauth2 $oauth
                             introspect=http://127.0.0.1:%%PORT_8081%%/introspect
                             client_secret_file=secret;
        }
        # JWTs only, its keys asked for the first time after the JWKS changed
        location /auth-fresh {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8143%%;
            mail_auth_fail_wait 0s;
            mail_auth_oauth2 jwks=jwks-fresh.json issuer=$iss audience=mail scope=mail;
        }
        # another client of the same endpoint, sharing the cache zone: the endpoint does not
        # know it (401)
        location /auth-other {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8143%%;
            mail_auth_fail_wait 0s;
            mail_auth_oauth2 jwks=jwks.json issuer=$iss audience=mail scope=mail client_id=other-proxy
                             introspect=http://127.0.0.1:%%PORT_8081%%/introspect
                             client_secret_file=secret;
        }
    }
}

mail {
@{[ $mail->(8144, 'auth') ]}
@{[ $mail->(8145, 'auth-badcred') ]}
@{[ $mail->(8146, 'auth-down') ]}
@{[ $mail->(8148, 'auth-other') ]}
    server {
        listen 127.0.0.1:%%PORT_8147%%;
        protocol pop3;
        pop3_auth xoauth2 oauthbearer;
        auth_http 127.0.0.1:%%PORT_8080%%/auth;
    }
}

END

port(8082);    # kept free: nothing listens there ("the endpoint is down")
$t->run_daemon($py, "$FindBin::Bin/lib/oauth2_introspect.py", port(8081), "$d/db.json", "$d/introspect.log",
	'mail-proxy', 's3cret');
$t->run_daemon(\&MailAuthBackend::imap, port(8143), "$d/imap.log", 'alice@example.org' => 'alice-backend');
$t->run_daemon(\&MailAuthBackend::pop3, port(8110), "$d/pop3.log", 'alice@example.org' => 'alice-backend');
$t->run()->plan(36);
$t->waitforsocket('127.0.0.1:' . port($_)) for (8081, 8143, 8110);

sub client {
	my ($action, $port, $user, $token) = @_;
	return run_tool($py, "$FindBin::Bin/lib/oauth2_client.py", $action, '127.0.0.1', port($port), $user, $token);
}

sub decision {
	my ($re) = @_;
	return wait_for(3, sub { read_from('error.log') =~ qr/mail_auth: .*$re/ });
}

sub requests {
	my ($token) = @_;
	return scalar(() = read_from('introspect.log') =~ /^\d+ \Q$token\E$/mg);
}

sub lines {
	return scalar(() = read_from('introspect.log') =~ /\n/g);
}

my $challenge = qr/challenge=\{"scope":"mail","status":"invalid_token"\}/;

###############################################################################

# POP3 AUTH through freenginx (short opaque tokens)
my ($rc, $out) = client('pop3-oauthbearer', 8147, 'alice@example.org', 'pop-ok');
is($rc, 0, 'pop3 oauthbearer: an active opaque token logs in') or diag($out);
ok(wait_for(3, sub { read_from('pop3.log') =~ /^pop3 ok user=alice\@example.org pass=alice-backend$/m }),
	'pop3: the backend got the account\'s backend password');
($rc, $out) = client('pop3-xoauth2', 8147, 'alice@example.org', 'pop-old');
ok($rc == 1 && $out =~ /challenge=\{"scope":"mail","status":"invalid_token"\}/,
	'pop3 xoauth2: an expired token is refused with the RFC 7628 challenge') or diag($out);

($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', 'opaque-active');
is($rc, 0, 'active opaque token: imap xoauth2 logs in') or diag($out);
ok(decision(qr/user="alice\@example.org" .* method=xoauth2 .* result=ok reason="token verified \(claim \\x22username\\x22\)/),
	'logged: verified by the username claim');
is(requests('opaque-active'), 1, 'the endpoint was asked once');
ok(wait_for(3, sub { read_from('imap.log') =~ /^imap ok user=alice\@example.org pass=alice-backend$/m }),
	'the backend got the account\'s backend password');

($rc, $out) = client('imap-oauthbearer', 8144, 'alice@example.org', 'opaque-cached');
is($rc, 0, 'oauthbearer: active token') or diag($out);
($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', 'opaque-cached');
is($rc, 0, 'the same token again') or diag($out);
is(requests('opaque-cached'), 1, 'cached: the second login did not reach the endpoint');
ok(decision(qr/result=ok reason="[^"]*\(cached introspection answer\)"/), 'logged as cached');
# the endpoint answers for the client that asks: another client's location sharing the zone
# does not get the first one's cached verdict
my $before = requests('opaque-cached');
($rc, $out) = client('imap-xoauth2', 8148, 'alice@example.org', 'opaque-cached');
is($rc, 1, 'another client_id, the same cache zone: not the first client\'s cached verdict') or diag($out);
is(requests('opaque-cached') - $before, 1, 'the endpoint was asked for this client (and refused it)');

($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', 'opaque-inactive');
ok($rc == 1 && $out =~ $challenge, 'inactive token: refused with the RFC 7628 challenge') or diag($out);
ok(decision(qr/result=invalid-token reason="token refused: token not active \(introspection\)/), 'logged: not active');
($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', 'opaque-inactive');
ok($rc == 1 && $out =~ $challenge && requests('opaque-inactive') == 1,
	'inactive again: refused from the cache (negative_ttl), the endpoint not asked') or diag($out);

($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', 'opaque-expired');
ok($rc == 1 && $out =~ $challenge, 'active but past its exp: refused with the challenge') or diag($out);
ok(decision(qr/result=invalid-token reason="token refused: token expired \(exp\)/), 'logged: expired');

($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', 'opaque-bob');
ok($rc == 1 && decision(qr/reason="token refused: token is for another user/), 'username is another user: refused')
	or diag($out);
($rc, $out) = client('imap-oauthbearer', 8144, 'alice@example.org', 'opaque-noscope');
like($out, qr/^FAIL challenge=\{.*"status":"insufficient_scope"\}/, 'scope not granted: insufficient_scope');

# temporary failures: never OK, never "invalid"
($rc, $out) = client('imap-xoauth2', 8145, 'alice@example.org', 'opaque-active');
ok($rc == 1 && $out =~ /Temporary server problem/ && $out !~ /challenge=/,
	'wrong client credentials at the endpoint: a temporary failure') or diag($out);
ok(decision(qr/result=store-error reason="token not checked: introspection failed: http:[^"]*: answered HTTP 401"/),
	'logged: HTTP 401');

($rc, $out) = client('imap-xoauth2', 8146, 'alice@example.org', 'opaque-active');
ok($rc == 1 && $out =~ /Temporary server problem/ && $out !~ /challenge=/, 'endpoint down: a temporary failure')
	or diag($out);
ok(decision(qr/result=store-error reason="token not checked: introspection failed: http:\/\/127\.0\.0\.1:\d+\/introspect: [^"]+"/),
	'logged: why');

# JWKS and introspection together: a JWT of the JWKS is verified locally
my $jwt = tool('mint', "$d/rsa.pem", 'RS256', 'k1',
	qq[{"iss":"$iss","aud":"mail","scope":"mail","exp":"+600","email":"alice\@example.org"}]);
my $before = lines();
($rc, $out) = client('imap-xoauth2', 8144, 'alice@example.org', $jwt);
ok($rc == 0 && lines() == $before, 'a JWT of the JWKS: verified locally, the endpoint not asked') or diag($out);

# a refused token repeated by one client: checked a few times, then refused without a check
# (before, a refused token counted as a right password refused by policy: every repeat was
# checked, each an introspection call when the refusal is not cached)
# an auth_http request of a token login of alice, as nginx mail sends it
sub token_request {
	my ($uri, $token, $ip) = @_;
	return auth_http($uri, 'Auth-Method' => 'xoauth2', 'Auth-User' => 'alice@example.org', 'Auth-Pass' => $token,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip) // '';
}
my @answers = map { token_request('/auth-limited', 'opaque-expired', '192.0.2.77') } 1 .. 10;
is(scalar(grep { /^Auth-Status: /m && !/^Auth-Status: OK/m } @answers), 10, '10 repeats of a refused token: all refused');
my $log = read_from('error.log');
my $checked = () = $log =~ /client=192\.0\.2\.77 [^\n]*result=invalid-token/g;
my $refused = () = $log =~ /client=192\.0\.2\.77 [^\n]*result=rate-limited/g;
ok($checked >= 3 && $checked <= 5 && $checked + $refused == 10,
	"$checked checked, $refused refused without a check (as a repeated wrong password)") or diag($log);

# k1 revoked (the JWKS rewritten without it) before this worker's first token login of the
# location: that login is checked against the file as it is now, not the keys nginx read when it
# started (the watcher thread starts with the first login, and its first look came after it)
write_to('jwks-fresh.json.tmp', tool('jwks', "k2=$d/rsa2.pem"));
rename("$d/jwks-fresh.json.tmp", "$d/jwks-fresh.json") or die "rename: $!";
select undef, undef, undef, 1.5;
my $claims = qq[{"iss":"$iss","aud":"mail","scope":"mail","exp":"+600","email":"alice\@example.org"}];
unlike(token_request('/auth-fresh', tool('mint', "$d/rsa.pem", 'RS256', 'k1', $claims), '192.0.2.78'), qr/^Auth-Status: OK\r$/m,
	'the first token login after a key was revoked: a token of the revoked key is refused');
like(token_request('/auth-fresh', tool('mint', "$d/rsa2.pem", 'RS256', 'k2', $claims), '192.0.2.78'), qr/^Auth-Status: OK\r$/m,
	'and a token of the key kept logs in');

# nginx -t refuses a broken introspection configuration
sub nginx_t {
	my ($directive) = @_;
	(my $conf = read_from('nginx.conf')) =~ s/mail_auth_oauth2 [^;]*;/$directive/;
	$conf =~ s/^pid [^;]*;//m;
	write_to('test.conf', $conf);
	return run_tool($bin, '-t', '-p', "$d/", '-c', 'test.conf', '-e', 'test-error.log', '-g', "pid $d/test.pid;");
}
my $i = 'introspect=http://127.0.0.1:1/i client_id=m';
($rc, $out) = nginx_t("mail_auth_oauth2 $i client_secret_file=$d/absent;");
ok($rc != 0 && $out =~ /mail_auth_oauth2: client_secret_file/, 'nginx -t: a missing client secret file') or diag($out);
($rc, $out) = nginx_t("mail_auth_oauth2 $i;");
ok($rc != 0 && $out =~ /needs client_id=ID and client_secret_file=PATH/, 'nginx -t: the credentials are required')
	or diag($out);
($rc, $out) = nginx_t("mail_auth_oauth2 introspect=https://idp/i client_id=m client_secret_file=$d/secret;");
ok($rc != 0 && $out =~ /must be an http:\/\/ URL/, 'nginx -t: no https') or diag($out);
($rc, $out) = nginx_t("mail_auth_oauth2 $i client_secret_file=$d/secret; mail_auth_thread_pool off;");
ok($rc != 0 && $out =~ /needs a thread pool/, 'nginx -t: introspection needs the thread pool') or diag($out);
($rc, $out) = nginx_t("mail_auth_oauth2 $i client_secret_file=$d/secret;");
is($rc, 0, 'nginx -t: introspection alone, without jwks/issuer/audience') or diag($out);
# ... but warned: many endpoints call any token of the realm active, whatever client it was made for
like($out, qr/\[warn\].*introspect= without audience=/, 'nginx -t: introspection without an audience warned');
($rc, $out) = nginx_t("mail_auth_oauth2 $i client_secret_file=$d/secret audience=mail;");
ok($rc == 0 && $out !~ /without audience/, 'nginx -t: with an audience, no warning') or diag($out);

###############################################################################
