#!/usr/bin/perl

# One credential store for nginx's mail proxy and the Dovecot behind it: Debian's Dovecot
# (imapd, pop3d, dovecot-auth-lua, lua-cjson) started here on loopback with its own
# configuration, whose passdb, userdb and userdb iterate are the Lua script
# nginx-conf/dovecot-mail-auth.lua asking the module's `mail_auth_json` location (the
# Nauthilus-compatible JSON API, behind nginx's own auth_basic). The same passwd-file is the
# store of the `mail_auth` location nginx mail's auth_http asks. Checked: the JSON API itself
# (Basic credentials, malformed JSON, the answers and their headers, list-accounts), IMAP and
# POP3 logins straight to Dovecot, the store's userdb fields (mail location, quota_rule),
# `doveadm user '*'`, a disabled account, the store missing (an internal failure in Dovecot,
# not a wrong password), a 403 that is no verdict (the API's htpasswd missing, a foreign Host:
# an internal failure too, neither a wrong password nor an unknown user), and
# client -> nginx -> Dovecot -> Lua -> the module.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use File::Path qw/ make_path /;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw/ encode_base64 /;

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthTest;
use MailAuthDovecot;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap pop3 http/);
workers_can_read($t);

plan(skip_all => 'Dovecot (dovecot-core, dovecot-imapd, dovecot-pop3d) not installed; '
	. 'scripts/setup installs them') unless MailAuthDovecot::available();
plan(skip_all => 'dovecot-auth-lua or lua-cjson not installed; scripts/setup installs them')
	unless -e '/usr/lib/dovecot/modules/auth/libauthdb_lua.so'
		&& -e '/usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so';
plan(skip_all => 'doveadm, htpasswd, sqlite3 or python3 not installed; scripts/setup installs them')
	unless have_tool('doveadm') && have_tool('htpasswd') && have_tool('python3')
		&& have_tool('sqlite3');

my $d = $t->testdir();
my $script = "$FindBin::Bin/../nginx-conf/dovecot-mail-auth.lua";
die "$script missing\n" unless -f $script;

# The store, read by both locations:
#   alice  bcrypt (htpasswd -B); her Maildir and quota come from the store (userdb_ fields)
#   bob    {SHA512-CRYPT} by doveadm pw; no fields: Dovecot's own mail_location
#   erin   {PLAIN}, nologin: disabled
my %pw = (alice => 'alice pw', bob => 'bob-pw', erin => 'erin pw');
my %hash = (
	alice => make_hash('htpasswd-B', $pw{alice}),
	bob => make_hash('doveadm-SHA512-CRYPT', $pw{bob}),
);
die "a hash tool failed\n" if grep { !defined } values %hash;
my $users = "alice:$hash{alice}::::::userdb_mail=maildir:$d/boxes/alice "
	. "userdb_quota_rule=*:storage=10M\n"
	. "bob:$hash{bob}\n"
	. "erin:{PLAIN}$pw{erin}::::::nologin\n"
	. "hank:{PLAIN}hank pw::::::host=imap1.internal\n";
$t->write_file('users', $users);

# The same accounts in SQLite, with the userdb fields as columns of their own (the query names
# them userdb_*): a second JSON location reads it (lookups on the thread pool)
my $sql = "CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT NOT NULL,
	enabled INTEGER NOT NULL DEFAULT 1, maildir TEXT, quota TEXT);
	INSERT INTO users VALUES ('alice', '$hash{alice}', 1, 'maildir:$d/boxes/alice', '*:storage=10M');
	INSERT INTO users VALUES ('bob', '$hash{bob}', 1, NULL, NULL);
	INSERT INTO users VALUES ('erin', '{PLAIN}$pw{erin}', 0, NULL, NULL);";
system('sqlite3', "$d/users.db", $sql) == 0 or die "sqlite3 failed\n";

# OAuth 2.0: a key by openssl, its JWKS and tokens minted by t/lib/oauth2_token.py
my $py = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';    # Debian's, with its modules
my $oauth = system($py, '-c', 'import jwt, cryptography') == 0
	&& system('openssl', 'genrsa', '-out', "$d/rsa.pem", '2048') == 0;
sub token_tool {
	my ($rc, $out) = run_tool($py, "$FindBin::Bin/lib/oauth2_token.py", @_);
	die "oauth2_token.py: $out" if $rc;
	$out =~ s/\s+\z//;
	return $out;
}
$t->write_file('jwks.json', token_tool('jwks', "k1=$d/rsa.pem:RS256")) if $oauth;

# the Basic credentials of the JSON API (nginx's auth_basic; Dovecot's script sends them)
my $secret = 'dovecot-api-secret';
$t->write_file('api.htpasswd', "dovecot:{PLAIN}$secret\n");
$t->write_file('api.secret', "dovecot:$secret\n");
chmod 0644, "$d/api.secret";

my $dovecot = MailAuthDovecot->new("$d/dovecot", imap => port(8144), pop3 => port(8111),
	lua => { script => $script, url => 'http://127.0.0.1:' . port(8080) . '/dovecot',
		credentials => "$d/api.secret" },
	quota => 1);

# alice's message only in the Maildir the store names; bob's in Dovecot's default place
make_path("$d/boxes/alice/new", "$d/boxes/alice/cur", "$d/boxes/alice/tmp");
open my $fh, '>', "$d/boxes/alice/new/1700000000.M1P$$.mail-auth-test" or die "$!\n";
print $fh "From: postmaster\@example.org\r\nTo: alice\@example.org\r\nSubject: for alice\r\n\r\n"
	. "Hello alice, this message is in the Maildir the store names.\r\n";
close $fh;
$dovecot->own("$d/boxes");
$dovecot->deliver('bob', "From: postmaster\@example.org\r\nTo: bob\@example.org\r\n"
	. "Subject: for bob\r\n\r\nHello bob, this message waits in your Maildir.\r\n");

my $conf = <<'EOF';

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        # nginx mail's auth_http
        location = /auth {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_fail_wait 1s;
        }

        # Dovecot's Lua passdb/userdb (Nauthilus-compatible JSON API)
        location = /dovecot {
            auth_basic "mail_auth_json";
            auth_basic_user_file api.htpasswd;
            mail_auth_json;
            mail_auth_passwd_file users;
            mail_auth_limit zone=json_limit:1m ip=100/m user=100/m;
        }

        # a tight limiter: keyed on the body's client_ip
        location = /dovecot-limited {
            auth_basic "mail_auth_json";
            auth_basic_user_file api.htpasswd;
            mail_auth_json;
            mail_auth_passwd_file users;
            mail_auth_limit zone=json_tight:1m ip=3/m;
        }

        #OAUTH#

        # the same, from SQLite: extra columns are attributes (userdb_ prefix dropped)
        location = /dovecot-sqlite {
            auth_basic "mail_auth_json";
            auth_basic_user_file api.htpasswd;
            mail_auth_json;
            mail_auth_sqlite users.db;
            mail_auth_sqlite_query "SELECT name, password, enabled, maildir AS userdb_mail,
                                           quota AS userdb_quota_rule
                                      FROM users WHERE name = :user";
            # list-accounts (Dovecot's iterate): the operator's query (default: SELECT name FROM users)
            mail_auth_sqlite_accounts_query "SELECT name FROM users WHERE enabled = 1";
        }

        # and without a thread pool: lookups, verification and the list on the event loop
        location = /dovecot-nopool {
            auth_basic "mail_auth_json";
            auth_basic_user_file api.htpasswd;
            mail_auth_json;
            mail_auth_sqlite users.db;
            mail_auth_sqlite_query "SELECT name, password, enabled FROM users WHERE name = :user";
            mail_auth_thread_pool off;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:%%PORT_8143%%;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:%%PORT_8110%%;
        protocol   pop3;
    }
}

EOF
# bearer tokens (method xoauth2 / oauthbearer), checked against the JWKS
my $oauth_location = <<'EOF';
location = /dovecot-oauth {
            auth_basic "mail_auth_json";
            auth_basic_user_file api.htpasswd;
            mail_auth_json;
            mail_auth_passwd_file users;
            mail_auth_oauth2 jwks=jwks.json issuer=https://issuer.test audience=mail;
        }
EOF
$conf =~ s/#OAUTH#/$oauth ? $oauth_location : ''/e;
$t->write_file_expand('nginx.conf', $conf);

$t->run()->plan(80);
$dovecot->start();    # its Lua script asks nginx from its first login on

###############################################################################

my ($imap, $pop3, $dimap, $dpop3) = (port(8143), port(8110), port(8144), port(8111));
my $basic = 'Basic ' . encode_base64("dovecot:$secret", '');

sub api {
	my ($body, %o) = @_;
	my $uri = ($o{uri} // '/dovecot') . ($o{mode} ? "?mode=$o{mode}" : '');
	my $method = $o{method} // 'POST';
	my $auth = exists $o{auth} ? $o{auth} : $basic;
	my $req = "$method $uri HTTP/1.0\r\nHost: " . ($o{host} // 'localhost') . "\r\n";
	$req .= "Authorization: $auth\r\n" if defined $auth;
	$req .= "Accept: application/json\r\n";
	$req .= "X-Dovecot-Session: $o{session}\r\n" if $o{session};
	$req .= "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n"
		if defined $body;
	return http($req . "\r\n" . ($body // ''));
}

sub login_body {
	my ($user, $pass, %o) = @_;
	return sprintf('{"username":"%s","password":"%s","client_ip":"%s",'
		. '"client_port":"50000","client_id":"","local_ip":"127.0.0.1","local_port":"143",'
		. '"service":"%s","method":"plain"}', $user, $pass, $o{ip} // '127.0.0.1',
		$o{service} // 'imap');
}

# Dovecot writes its log through its own log process: give a line a moment to arrive
sub dovecot_logged {
	my ($re) = @_;
	return wait_for(5, sub { $dovecot->log() =~ $re });
}

# The JSON API itself

my $r = api(login_body('alice', $pw{alice}), auth => undef);
like($r, qr/^HTTP\/1\.1 401 /, 'JSON API: no Basic credentials, 401 (auth_basic)');
unlike($r, qr/Auth-Status: OK/i, 'JSON API: ... and no OK');
$r = api(login_body('alice', $pw{alice}), auth => 'Basic ' . encode_base64('dovecot:wrong', ''));
like($r, qr/^HTTP\/1\.1 401 /, 'JSON API: wrong Basic credentials, 401');

$r = api(login_body('alice', $pw{alice}), session => 'sess-1');
like($r, qr/^HTTP\/1\.1 200 /, 'JSON API: right password, 200');
like($r, qr/^Auth-Status: OK\r$/m, 'JSON API: Auth-Status: OK');
like($r, qr/^Auth-User: alice\r$/m, 'JSON API: Auth-User, the account');
like($r, qr/^X-Nauthilus-Session: [0-9a-f]{24}\r$/m, 'JSON API: X-Nauthilus-Session');
like($r, qr/"ok":true/, 'JSON API: body ok true');
like($r, qr/"attributes":\{"account":\["alice"\],"mail":\["maildir:\Q$d\E\/boxes\/alice"\],"quota_rule":\["\*:storage=10M"\]\}/,
	'JSON API: the store\'s userdb_ fields as attributes');

$r = api(login_body('alice', 'wrong'));
like($r, qr/^HTTP\/1\.1 403 .*^Auth-Status: Invalid login or password\r$/ms,
	'JSON API: wrong password, 403 and the message');
like($r, qr/^X-Nauthilus-Session: [0-9a-f]{24}\r$/m, 'JSON API: the session id on a refusal too');
$r = api(login_body('erin', $pw{erin}));
like($r, qr/^HTTP\/1\.1 403 .*^Auth-Status: Account not enabled\r$/ms,
	'JSON API: disabled account, "Account not enabled"');
# an account that names its backend host by name (Dovecot's proxy field): the JSON answer names
# no backend, so there is nothing to refuse (before: 503, as an auth_http OK must carry an
# address nginx can use)
$r = api(login_body('hank', 'hank pw'));
like($r, qr/^HTTP\/1\.1 200 .*^Auth-User: hank\r$/ms, 'JSON API: an account with host= a name: OK');
$r = api('{"username":"alice","password":');
like($r, qr/^HTTP\/1\.1 400 .*^X-Nauthilus-Session: /ms, 'JSON API: malformed JSON, 400');
unlike($r, qr/Auth-Status: OK/i, 'JSON API: malformed JSON is never OK');
like($t->read_file('error.log'), qr/\[error\].*mail_auth_json: bad request: malformed JSON/,
	'JSON API: malformed JSON logged');
$r = api(undef, method => 'GET');
like($r, qr/^HTTP\/1\.1 405 .*^X-Nauthilus-Session: /ms, 'JSON API: GET without a mode, 405 (with a session id)');
$r = api('{"username":"' . ('a' x 20000) . '"}');
like($r, qr/^HTTP\/1\.1 413 .*^X-Nauthilus-Session: /ms, 'JSON API: a 20 KB body, 413 (with a session id)');
$r = api('{"username":"bob","service":"lmtp"}', mode => 'no-auth');
like($r, qr/^HTTP\/1\.1 200 .*^Auth-User: bob\r$/ms, 'JSON API: no-auth, a userdb lookup');
$r = api('{"username":"mallory","service":"lmtp"}', mode => 'no-auth');
like($r, qr/^HTTP\/1\.1 403 /, 'JSON API: no-auth, unknown user 403');
$r = api(undef, mode => 'list-accounts', method => 'GET');
my ($list) = $r =~ /\r\n\r\n(.*)\z/s;
my $names = eval { decode_json($list // '') } // [];
is(join(',', sort @$names), 'alice,bob,erin,hank',
	'JSON API: list-accounts, a JSON array of the store\'s names');

# a web page that rebinds its own name to the listener (DNS rebinding) reads nothing
$r = api('{"username":"bob","service":"lmtp"}', mode => 'no-auth', host => 'rebind.evil.example');
like($r, qr/^HTTP\/1\.1 403 /, 'JSON API: a request for a foreign Host refused (no-auth)');
unlike($r, qr/bob/, 'and nothing of bob in the answer');
$r = api(undef, mode => 'list-accounts', method => 'GET', host => 'rebind.evil.example:8080');
like($r, qr/^HTTP\/1\.1 403 /, 'JSON API: list-accounts for a foreign Host refused');
like(api(login_body('alice', 'x'), host => '127.0.0.1'), qr/^HTTP\/1\.1 403 .*Invalid login/ms,
	'JSON API: an address as Host is ours (a password check answered)');

# Expect: 100-continue (Dovecot's HTTP client sends it): nginx says 100 before the body

{
	my $body = login_body('alice', $pw{alice});
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080), Proto => 'tcp',
		Timeout => 5) or die "connect: $!\n";
	print $s "POST /dovecot HTTP/1.1\r\nHost: localhost\r\nAuthorization: $basic\r\n"
		. "Content-Type: application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
		. "Content-Length: " . length($body) . "\r\n\r\n";
	my $first = eval {
		local $SIG{ALRM} = sub { die "timeout\n" };
		alarm(1);
		my $l = <$s>;
		alarm(0);
		$l;
	};
	alarm(0);
	like($first // '', qr/^HTTP\/1\.1 100 Continue/, 'Expect: 100-continue answered at once');
	print $s $body;
	local $/;
	my $rest = <$s> // '';
	like($rest, qr/HTTP\/1\.1 200 .*^Auth-Status: OK\r$/ms, '... then the answer');
}

# the limiter counts failed password checks by the body's client_ip; userdb lookups not at all

my @r = map { api('{"username":"alice","service":"imap","client_ip":"192.0.2.9"}',
	mode => 'no-auth', uri => '/dovecot-limited') } 1 .. 5;
is(scalar(grep { /^HTTP\/1\.1 200 / } @r), 5, 'limiter: no-auth lookups are not counted');
@r = map { api(login_body('alice', "wrong$_", ip => '192.0.2.9'), uri => '/dovecot-limited') } 1 .. 3;
is(scalar(grep { /^HTTP\/1\.1 403 / } @r), 3, 'limiter: three wrong passwords from 192.0.2.9');
$r = api(login_body('alice', $pw{alice}, ip => '192.0.2.9'), uri => '/dovecot-limited');
like($r, qr/^HTTP\/1\.1 403 /, 'limiter: then even the right password is refused');
like($t->read_file('error.log'),
	qr/mail_auth: user="alice" client=192\.0\.2\.9 protocol=imap method=plain attempt=1 result=rate-limited/,
	'limiter: logged rate-limited for the body\'s client_ip');
$r = api(login_body('alice', $pw{alice}, ip => '192.0.2.10'), uri => '/dovecot-limited');
like($r, qr/^HTTP\/1\.1 200 /, 'limiter: another client_ip (same connection address) is let in');

# OAuth 2.0 bearer tokens through the JSON API (what Dovecot's XOAUTH2/OAUTHBEARER would send)

SKIP: {
skip 'python3-jwt / python3-cryptography or openssl missing (scripts/setup installs them)', 3
	unless $oauth;
my $claims = '{"iss":"https://issuer.test","aud":"mail","email":"alice","exp":"+3600"}';
my $token = token_tool('mint', "$d/rsa.pem", 'RS256', 'k1', $claims);
my $tbody = sub { sprintf('{"username":"%s","password":"%s","client_ip":"127.0.0.1",'
	. '"service":"imap","method":"%s"}', @_) };
$r = api($tbody->('alice', $token, 'xoauth2'), uri => '/dovecot-oauth');
like($r, qr/^HTTP\/1\.1 200 .*^Auth-User: alice\r$/ms, 'OAuth: xoauth2 with a valid token, 200');
$r = api($tbody->('alice', $token . 'x', 'oauthbearer'), uri => '/dovecot-oauth');
like($r, qr/^HTTP\/1\.1 403 /, 'OAuth: oauthbearer with a tampered token, 403');
$r = api($tbody->('bob', $token, 'xoauth2'), uri => '/dovecot-oauth');
like($r, qr/^HTTP\/1\.1 403 /, 'OAuth: alice\'s token for bob, 403');
}

# SQLite: the same answers, the attributes from columns

$r = api(login_body('alice', $pw{alice}), uri => '/dovecot-sqlite');
like($r, qr/^HTTP\/1\.1 200 .*^Auth-User: alice\r$/ms, 'SQLite JSON API: right password, 200');
like($r, qr/"attributes":\{"account":\["alice"\],"mail":\["maildir:\Q$d\E\/boxes\/alice"\],"quota_rule":\["\*:storage=10M"\]\}/,
	'SQLite JSON API: columns as attributes');
$r = api(login_body('alice', 'wrong'), uri => '/dovecot-sqlite');
like($r, qr/^HTTP\/1\.1 403 /, 'SQLite JSON API: wrong password, 403');
$r = api(login_body('erin', $pw{erin}), uri => '/dovecot-sqlite');
like($r, qr/^HTTP\/1\.1 403 .*^Auth-Status: Account not enabled\r$/ms,
	'SQLite JSON API: enabled = 0, "Account not enabled"');
$r = api('{"username":"bob","service":"lmtp"}', mode => 'no-auth', uri => '/dovecot-sqlite');
like($r, qr/^HTTP\/1\.1 200 .*"attributes":\{"account":\["bob"\]\}/ms,
	'SQLite JSON API: no-auth, no attributes for bob but the account field');
$r = api(undef, mode => 'list-accounts', method => 'GET', uri => '/dovecot-sqlite');
($list) = $r =~ /\r\n\r\n(.*)\z/s;
$names = eval { decode_json($list // '') } // [];
is(join(',', sort @$names), 'alice,bob', 'SQLite JSON API: list-accounts by mail_auth_sqlite_accounts_query');

$r = api(login_body('alice', $pw{alice}), uri => '/dovecot-nopool');
like($r, qr/^HTTP\/1\.1 200 .*^Auth-User: alice\r$/ms, 'no thread pool: SQLite login answered inline');
$r = api(undef, mode => 'list-accounts', method => 'GET', uri => '/dovecot-nopool');
like($r, qr/^HTTP\/1\.1 200 .*\["(?:alice|bob|erin)","(?:alice|bob|erin)","(?:alice|bob|erin)"\]\z/ms,
	'no thread pool: list-accounts written inline');

# Straight to Dovecot: its passdb and userdb are the Lua script asking the module

my ($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', $pw{alice});
is($rc, 0, 'Dovecot IMAP: alice logs in (Lua passdb -> mail_auth_json)') or diag($out);
like($out, qr/Hello alice, this message is in the Maildir the store names/,
	'Dovecot IMAP: the mail location from the store took effect');
# (before any failed login: Dovecot delays logins from an address after failures)
{
	my $s = Test::Nginx::IMAP->new(PeerAddr => "127.0.0.1:$dimap");
	$s->read();
	$s->send(qq/a LOGIN alice "$pw{alice}"/);
	$s->ok('IMAP LOGIN alice for GETQUOTAROOT');
	$s->send('b GETQUOTAROOT INBOX');
	my $lines = '';
	while (defined(my $l = $s->read())) {
		$lines .= $l;
		last if $l =~ /^b /;
	}
	like($lines, qr/^\* QUOTA "User quota" \(STORAGE \d+ 10240\)/m,
		'IMAP GETQUOTAROOT: the 10M limit from the store') or diag($lines);
}

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', 'wrong');
is($rc, 1, 'Dovecot IMAP: wrong password refused') or diag($out);
ok(dovecot_logged(qr/lua\(alice,127\.0\.0\.1.*Password mismatch/),
	'Dovecot IMAP: logged as a password mismatch');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $dpop3, 'bob', $pw{bob});
is($rc, 0, 'Dovecot POP3: bob logs in') or diag($out);
like($out, qr/Hello bob, this message waits/, 'Dovecot POP3: RETR from the default Maildir');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $dpop3, 'bob', 'wrong');
is($rc, 1, 'Dovecot POP3: wrong password refused') or diag($out);

# a disabled account is disabled for Dovecot

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'erin', $pw{erin});
is($rc, 1, 'Dovecot IMAP: the disabled account is refused') or diag($out);
$out = $dovecot->doveadm('auth', 'test', '-x', 'service=imap', 'erin', $pw{erin});
like($out, qr/auth failed.*code=user_disabled/s, 'doveadm auth test: USER_DISABLED') or diag($out);

# userdb: fields and iterate

$out = $dovecot->doveadm('user', 'alice');
like($out, qr/^mail\s+maildir:\Q$d\E\/boxes\/alice$/m, 'doveadm user: mail from the store')
	or diag($out);
like($out, qr/^quota_rule\s+\*:storage=10M$/m, 'doveadm user: quota_rule from the store');
$out = $dovecot->doveadm('quota', 'get', '-u', 'alice');
like($out, qr/^User quota\s+STORAGE\s+\d+\s+10240\s/m, 'doveadm quota get: the 10M limit')
	or diag($out);
$out = $dovecot->doveadm('user', '*');
is(join(',', sort split /\s+/, $out), 'alice,bob,erin,hank',
	'doveadm user \'*\': exactly the store\'s accounts') or diag($out);
# a disabled account is still a user to the userdb (as with Dovecot's own nologin), the lookup
# LMTP makes before delivering: its mail is delivered, not bounced for good as to an unknown
# user (before, the module answered the userdb lookup as for a failed login)
my $code;
($out, $code) = $dovecot->doveadm('user', 'erin');
ok($code == 0 && $out !~ /doesn't exist/, 'doveadm user: the disabled account exists for the userdb')
	or diag("exit $code: $out");

# the full chain: client -> nginx mail (auth_http: mail_auth) -> Dovecot (Lua: mail_auth_json)

($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $imap, 'alice', $pw{alice});
is($rc, 0, 'nginx -> Dovecot IMAP: alice logs in') or diag($out);
like($out, qr/Hello alice, this message is in the Maildir/, 'nginx -> Dovecot IMAP: fetched');
($rc, $out) = sasl_client('pop3-retr', '127.0.0.1', $pop3, 'bob', $pw{bob});
is($rc, 0, 'nginx -> Dovecot POP3: bob logs in') or diag($out);
like($t->read_file('error.log'),
	qr/mail_auth: user="bob" client=127\.0\.0\.1 protocol=pop3 method=plain attempt=\d+ result=ok .*request: "GET \/auth /,
	'nginx\'s auth_http decision for bob');
like($t->read_file('error.log'),
	qr/mail_auth: user="bob" client=127\.0\.0\.1 protocol=pop3 method=plain attempt=\d+ result=ok .*request: "POST \/dovecot /,
	'... and Dovecot\'s, by the same store');

# the store missing: Dovecot gets an internal failure, not a password mismatch

rename "$d/users", "$d/users.away" or die "$!\n";
sleep 2;    # the store's watcher checks the file every second
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', $pw{alice});
like($out, qr/UNAVAILABLE|Temporary/i, 'store missing: Dovecot IMAP says temporary failure')
	or diag($out);
$out = $dovecot->doveadm('auth', 'test', '-x', 'service=imap', 'alice', $pw{alice});
like($out, qr/code=temp_fail/, 'store missing: doveadm auth test, INTERNAL_FAILURE (temp_fail)')
	or diag($out);
rename "$d/users.away", "$d/users" or die "$!\n";
sleep 2;
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', $pw{alice});
is($rc, 0, 'store back: Dovecot IMAP login again') or diag($out);

# a 403 that is no verdict (no JSON "ok": false in it): nginx's own when the API location's
# auth_basic_user_file is missing (auth_basic answers 403 on ENOENT). Dovecot gets a temporary
# failure: neither "no such user" (LMTP would bounce the mail, 550 5.1.1) nor a wrong password

rename "$d/api.htpasswd", "$d/api.htpasswd.away" or die "$!\n";
$r = api('{"username":"alice","service":"lmtp"}', mode => 'no-auth');
like($r, qr/^HTTP\/1\.1 403 /, 'API htpasswd missing: nginx\'s auth_basic answers 403');
unlike($r, qr/"ok"/, '... a 403 without a verdict');
($out, $rc) = $dovecot->doveadm('user', 'alice');
is($rc, 75, 'API htpasswd missing: doveadm user, a temporary failure (EX_TEMPFAIL)') or diag($out);
unlike($out, qr/doesn't exist/, 'API htpasswd missing: ... not "user doesn\'t exist"');
$out = $dovecot->doveadm('auth', 'test', '-x', 'service=imap', 'alice', $pw{alice});
like($out, qr/code=temp_fail/, 'API htpasswd missing: doveadm auth test, INTERNAL_FAILURE (temp_fail)')
	or diag($out);
ok(dovecot_logged(qr/mail-auth: HTTP 403 \(not a refusal by the module\)/),
	'API htpasswd missing: Dovecot logged the status');
rename "$d/api.htpasswd.away", "$d/api.htpasswd" or die "$!\n";
# (auth_basic's 403 came before the body Dovecot announced with Expect: 100-continue: nginx may
# take the next request on that connection for the body, and answer it 400; one lookup for that)
$dovecot->doveadm('user', 'alice');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', $pw{alice});
is($rc, 0, 'API htpasswd back: Dovecot IMAP login again') or diag($out);

# the module's own 403 for a Host not in server_name ({"error": ...}, no verdict): nginx
# reloaded with Dovecot's /dovecot a proxy that sends such a Host to the JSON location

my $nginx_conf = $t->read_file('nginx.conf');
my $foreign_conf = $nginx_conf;
my $at = index($foreign_conf, 'location = /dovecot {');
die "no location = /dovecot in nginx.conf\n" if $at < 0;
substr($foreign_conf, $at, length 'location = /dovecot {') = 'location = /dovecot {
            proxy_pass http://127.0.0.1:' . port(8080) . '/dovecot-host;
            proxy_set_header Host rebind.evil.example;
        }

        location = /dovecot-host {';
$t->write_file('nginx.conf', $foreign_conf);
$t->reload();
ok(wait_for(10, sub {
	my $a = api('{"username":"alice","service":"lmtp"}', mode => 'no-auth');
	$a =~ /^HTTP\/1\.1 403 / && $a =~ /"error"/ && $a !~ /"ok"/;
}), 'foreign Host: /dovecot reloaded, the module\'s 403 without a verdict');
$dovecot->doveadm('user', 'alice');    # Dovecot's connection to an old worker, if it kept one
($out, $rc) = $dovecot->doveadm('user', 'alice');
is($rc, 75, 'foreign Host: doveadm user, a temporary failure (EX_TEMPFAIL)') or diag($out);
unlike($out, qr/doesn't exist/, 'foreign Host: ... not "user doesn\'t exist"');
$out = $dovecot->doveadm('auth', 'test', '-x', 'service=imap', 'alice', $pw{alice});
like($out, qr/code=temp_fail/, 'foreign Host: doveadm auth test, INTERNAL_FAILURE (temp_fail)')
	or diag($out);
$t->write_file('nginx.conf', $nginx_conf);
$t->reload();
wait_for(10, sub { api(login_body('alice', $pw{alice})) =~ /^HTTP\/1\.1 200 / });
$dovecot->doveadm('user', 'alice');
($rc, $out) = sasl_client('imap-fetch', '127.0.0.1', $dimap, 'alice', $pw{alice});
is($rc, 0, 'own Host again: Dovecot IMAP login again') or diag($out);

###############################################################################

$t->stop();
my $pid = $dovecot->pid();
$dovecot->stop();
ok(!kill(0, $pid), 'Dovecot master process gone');

###############################################################################
