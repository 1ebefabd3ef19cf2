#!/usr/bin/perl

# Tests for ngx-mail-auth: the LDAP store (mail_auth_ldap) through nginx's mail proxy, against a
# throwaway OpenLDAP slapd (its own slapd.conf and tree in the test directory, loopback only).
# nginx starts while the directory is down (temporary failures, no refusal to start); then, in
# bind mode (the directory checks the password: {SSHA}, {CRYPT}$6$ and {CRYPT}$2y$ entries) and
# in password mode (userPassword read by the service account and verified by the module, CRAM-MD5
# from a {PLAIN} value): right/wrong password, unknown user, a mail-address login mapped to the
# backend user, per-user mailHost routing, disabled/protocol/network attributes, LDAP filter
# injection in user names, an ambiguous user, failover past a dead first server, ldaps:// and
# StartTLS with the server's certificate verified (and refused with another CA), a directory that
# stops answering (SIGSTOP) while other logins and another location are answered, and the
# directory killed mid-run (temporary failures) and restarted (recovery without reload).

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Select;
use IO::Socket::INET;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;
use MailAuthTLS;
use MailAuthLdap;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

ldap_skip_unless_installed();
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');
plan(skip_all => 'openssl not installed') unless have_tool('openssl');

my $t = Test::Nginx->new()->has(qw/mail imap pop3 http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
workers_can_read($t);

my $d = $t->testdir();
my ($lport, $sport, $dead) = (port(8389), port(8636), port(8390));
my $base = 'dc=example,dc=org';

# TLS: a server certificate for 127.0.0.1 from the test CA; another CA that did not sign it
make_server_cert($t);
make_client_cert($t, 'rogue', rogue => 1, name => 'rogue-ca');

# test-only attributes for the policy fields (an operator has a schema of their own, or uses
# the filter); mailHost is misc.schema's
$t->write_file('mailauth.schema', <<'EOF');
attributetype ( 1.3.6.1.4.1.32473.1.1 NAME 'mailAuthEnabled' EQUALITY booleanMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.7 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.32473.1.2 NAME 'mailAuthProtocol' EQUALITY caseIgnoreMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.32473.1.3 NAME 'mailAuthNetwork' EQUALITY caseIgnoreMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.32473.1.4 NAME 'mailAuthPort' EQUALITY integerMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.2.1 NAME 'mailAuthAccount' SUP top AUXILIARY
	MAY ( mailAuthEnabled $ mailAuthProtocol $ mailAuthNetwork $ mailAuthPort ) )
EOF

mkdir "$d/ldap-db" or die;
$t->write_file('slapd.conf', slapd_conf_head($d, qw/ core cosine inetorgperson nis misc /, "$d/mailauth.schema")
	. <<"EOF");
TLSCACertificateFile $d/ca.crt
TLSCertificateFile $d/server.crt
TLSCertificateKeyFile $d/server.key
database mdb
suffix "$base"
rootdn "cn=admin,$base"
rootpw admin-pw
directory $d/ldap-db
index objectClass,uid,mail eq
# the service account reads passwords (mode=password); anyone may bind with one (mode=bind)
access to attrs=userPassword by dn.exact="cn=nginx,ou=services,$base" read by anonymous auth by * none
access to * by * read
# operation counters (cn=Monitor): how many binds the directory saw
database monitor
access to * by * read
EOF

sub slappasswd {
	my ($pass, @o) = @_;
	my ($rc, $out) = run_tool('slappasswd', @o, '-s', $pass);
	die "slappasswd failed: $out\n" if $rc;
	$out =~ s/\s+\z//;
	return $out;
}

my ($rc0, $bcrypt) = run_tool('htpasswd', '-nbB', '-C', '5', 'carol', 'carol-pw');
die "htpasswd failed\n" if $rc0;
$bcrypt =~ s/^carol:|\s+\z//g;
my %pw = (
	alice => slappasswd('alice-pw', '-h', '{SSHA}'),
	bob => slappasswd('bob-pw', '-h', '{CRYPT}', '-c', '$6$%.16s'),
	carol => "{CRYPT}$bcrypt",
	dan => '{PLAIN}dan-pw',
	dave => slappasswd('dave-pw'),
	erin => slappasswd('erin-pw'),
	frank => slappasswd('frank-pw'),
	gina => slappasswd('gina-pw'),
	hana => slappasswd('hana-pw'),
	sloth => slappasswd('sloth-pw'),
	svc => slappasswd('svc-pw'),
);
my $b = port(8146);

sub person {
	my ($uid, %a) = @_;
	my $e = "dn: uid=$uid,ou=people,$base\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n"
		. "objectClass: mailAuthAccount\nuid: $uid\ncn: $uid\nsn: $uid\n";
	$e .= "userPassword: $pw{$uid}\n" if $pw{$uid};
	for my $k (sort keys %a) {
		$e .= "$k: $_\n" for ref $a{$k} ? @{$a{$k}} : $a{$k};
	}
	return "$e\n";
}

$t->write_file('tree.ldif', <<"EOF" . join('', map { person(@$_) } (
dn: $base
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,$base
objectClass: organizationalUnit
ou: people

dn: ou=services,$base
objectClass: organizationalUnit
ou: services

dn: cn=nginx,ou=services,$base
objectClass: person
cn: nginx
sn: nginx
userPassword: $pw{svc}

EOF
	[alice => (mail => 'alice@example.org', description => ['*:storage=10M', 'Trash:storage=+100M'])],
	[bob => (mailHost => '127.0.0.1', mailAuthPort => $b)],
	[carol => ()],
	[dan => ()],
	[dave => (mailAuthEnabled => 'FALSE')],
	[erin => (mailAuthProtocol => 'pop3')],
	[frank => (mailAuthNetwork => ['10.0.0.0/8', '127.0.0.0/8'])],
	[gina => (mailAuthNetwork => '10.0.0.0/8')],
	# the network rule held in a subtype with a language tag: asking for mailAuthNetwork returns it
	['hana', 'mailAuthNetwork;lang-en' => '10.0.0.0/8'],
	[sloth => ()],
	# two entries with one mail address: ambiguous
	[twin1 => (mail => 'twin@example.org')],
	[twin2 => (mail => 'twin@example.org')],
)));

my ($rc, $out) = run_tool('slapadd', '-f', "$d/slapd.conf", '-l', "$d/tree.ldif");
die "slapadd failed: $out\n" if $rc;

# slapd's pid while it runs (MailAuthLdap stops it whatever happens)
my $slapd_pid;

sub slapd_start {
	$slapd_pid = slapd_run($d, "ldap://127.0.0.1:$lport/ ldaps://127.0.0.1:$sport/", $lport);
}

sub slapd_stop {
	slapd_kill($d, $slapd_pid);
	undef $slapd_pid;
}

$t->write_file('ldap.pw', "svc-pw\n");
$t->write_file('users', "local:" . make_hash('openssl-6', 'local-pw') . "\n");

$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # the first server is dead (nothing listens there): failover to the second
    mail_auth_ldap "ldap://127.0.0.1:$dead ldap://127.0.0.1:$lport"
                   base=ou=people,$base
                   "filter=(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%u)))"
                   bind_dn=cn=nginx,ou=services,$base bind_password_file=%%TESTDIR%%/ldap.pw
                   connect_timeout=2s query_timeout=60s pool=2;
    mail_auth_ldap_attrs name=uid user=uid server=mailHost port=mailAuthPort
                         enabled=mailAuthEnabled protocols=mailAuthProtocol
                         networks=mailAuthNetwork userdb_quota_rule=description;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_backend pop3 127.0.0.1:%%PORT_8111%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-password {
            mail_auth_ldap ldap://127.0.0.1:$lport base=ou=people,$base mode=password
                           bind_dn=cn=nginx,ou=services,$base bind_password_file=%%TESTDIR%%/ldap.pw;
            mail_auth_ldap_attrs name=uid;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-ldaps {
            mail_auth_ldap ldaps://127.0.0.1:$sport base=ou=people,$base ssl_ca=%%TESTDIR%%/ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-starttls {
            mail_auth_ldap ldap://127.0.0.1:$lport base=ou=people,$base starttls=on
                           ssl_ca=%%TESTDIR%%/ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-rogue-ca {
            mail_auth_ldap ldaps://127.0.0.1:$sport base=ou=people,$base ssl_ca=%%TESTDIR%%/rogue-ca.crt;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-short {
            mail_auth_ldap ldap://127.0.0.1:$lport base=ou=people,$base query_timeout=1s;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }

        location = /auth-local {
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
        }

        # Dovecot's Lua passdb/userdb (the JSON API), its attributes from the directory
        location = /dovecot {
            mail_auth_json;
        }

        location = /ping {
            return 200 "pong\\n";
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }

    server {
        listen     127.0.0.1:8110;
        protocol   pop3;
    }

    server {
        listen     127.0.0.1:8153;
        protocol   imap;
        imap_auth  plain cram-md5;
        auth_http  127.0.0.1:8080/auth-password;
    }

    server {
        listen     127.0.0.1:8163;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-ldaps;
    }

    server {
        listen     127.0.0.1:8173;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-starttls;
    }

    server {
        listen     127.0.0.1:8183;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-rogue-ca;
    }

    server {
        listen     127.0.0.1:8193;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-short;
    }

    server {
        listen     127.0.0.1:8203;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-local;
    }
}

EOF

my %backend = (alice => 'alice-pw', carol => 'carol-pw', dan => 'dan-pw', erin => 'erin-pw',
	sloth => 'sloth-pw', local => 'local-pw', bob => 'bob-pw', frank => 'frank-pw', gina => 'gina-pw', hana => 'hana-pw');
$t->run_daemon(\&MailAuthBackend::imap, port(8145), "$d/backend-a.log", %backend);
$t->run_daemon(\&MailAuthBackend::imap, port(8146), "$d/backend-b.log", bob => 'bob-pw');
$t->run_daemon(\&MailAuthBackend::pop3, port(8111), "$d/backend-a.log", %backend);

# nginx starts while the directory is down
$t->run()->plan(65);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8145, 8146, 8111;

my $temp = qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/;
my $refused = qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login or password/;

###############################################################################

like(imap_login('alice', 'alice-pw'), $temp, 'directory down at start: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*ldap "ldap:\/\/127\.0\.0\.1:$dead ldap:\/\/127\.0\.0\.1:$lport": cannot connect/,
	'directory down logged');

slapd_start();

ok(wait_for(10, sub { imap_login('alice', 'alice-pw') =~ /^a01 OK/ }),
	'directory up: recovered without reload (past the dead first server)');
like($t->read_file('backend-a.log'), qr/^imap ok user=alice pass=alice-pw$/m, 'default backend reached');
like($t->read_file('error.log'), qr/\[info\].*ldap .*usable again/, 'recovery logged');

# bind mode: the directory checks the password, whatever its hash
like(imap_login('alice', 'wrong'), $refused, 'bind: wrong password ({SSHA})');
like(imap_login('nobody', 'x'), $refused, 'bind: unknown user');
like(imap_login('carol', 'carol-pw'), qr/^a01 OK/, 'bind: {CRYPT}$2y$ (bcrypt) entry');
like(imap_login('carol', 'wrong'), $refused, 'bind: {CRYPT}$2y$ entry, wrong password');
like(imap_login('alice@example.org', 'alice-pw'), qr/^a01 OK/, 'login by mail address');
like($t->read_file('backend-a.log'), qr/^imap ok user=alice pass=alice-pw$/m, 'the backend sees the uid');
like(imap_login('bob', 'bob-pw'), qr/^a01 OK/, 'bind: {CRYPT}$6$ entry, routed by mailHost and port');
like($t->read_file('backend-b.log'), qr/^imap ok user=bob /m, 'routed to the second backend');
like(imap_login('dave', 'dave-pw'), qr/^a01 NO \[CONTACTADMIN\] /, 'disabled entry (mailAuthEnabled FALSE)');
like(imap_login('dave', 'x'), $refused, 'disabled entry, wrong password: the usual refusal');
like(imap_login('erin', 'erin-pw'), $refused, 'protocol attribute refuses imap (as a wrong password)');
($rc, $out) = real_client('pop3', '127.0.0.1', port(8110), 'erin', 'erin-pw');
is($rc, 0, 'protocol attribute allows pop3 (poplib)') or diag($out);
like(imap_login('gina', 'gina-pw'), $refused, 'network attribute refuses 127.0.0.1');
like(imap_login('hana', 'hana-pw'), $refused, 'network attribute with an option (;lang-en) refuses 127.0.0.1 too');
like(imap_login('frank', 'frank-pw'), qr/^a01 OK/, 'network attribute with two values: the second allows 127.0.0.1');

# the JSON API (Dovecot's Lua passdb) with the directory's attributes, a repeated one as a list
my $body = '{"username":"alice","password":"%s","client_ip":"127.0.0.1","client_port":"50000",'
	. '"local_ip":"127.0.0.1","local_port":"143","service":"imap","method":"plain"}';
my $json = sub {
	my $b = sprintf($body, shift);
	return http("POST /dovecot HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n"
		. "Content-Length: " . length($b) . "\r\n\r\n$b");
};
my $r = $json->('alice-pw');
like($r, qr/^Auth-Status: OK\r$/m, 'JSON API: bind accepted');
like($r, qr/"quota_rule":\["\*:storage=10M","Trash:storage=\+100M"\]/, 'JSON API: a two-valued attribute as a list');
unlike($json->('wrong'), qr/^Auth-Status: OK/m, 'JSON API: wrong password refused');

# LDAP filter injection: each refused as an unknown user, none matched an entry
my @inject = ('*', 'a*', '*)(uid=*', 'alice)(uid=*', '*)(|(uid=*', 'x)(|(objectClass=*)', 'alice\\');
my @answers = map { imap_login($_, 'alice-pw') } @inject;
is(scalar(grep { $_ =~ $refused } @answers), scalar(@inject), 'filter injection in user names refused')
	or diag(join('', @answers));
($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'al*', 'alice-pw');
isnt($rc, 0, 'a wildcard user name refused (imaplib)');
my $log = $t->read_file('error.log');
my $unknown = () = $log =~ /\bunknown-user\b/g;
cmp_ok($unknown, '>=', scalar(@inject) + 1, 'each injection attempt logged as an unknown user');
unlike($log, qr/more than one entry for user "[^"]*\*/, 'no injection attempt matched entries');

# two entries for one login: a store error, never the first of them
like(imap_login('twin@example.org', 'x'), $temp, 'ambiguous user: temporary failure');
like($t->read_file('error.log'), qr/more than one entry for user "twin\@example\.org"/, 'ambiguous user logged');

# password mode: userPassword read by the service account, verified here
like(imap_login('alice', 'alice-pw', 8153), qr/^a01 OK/, 'password mode: {SSHA}');
like(imap_login('bob', 'bob-pw', 8153), qr/^a01 OK/, 'password mode: {CRYPT}$6$');
like(imap_login('carol', 'carol-pw', 8153), qr/^a01 OK/, 'password mode: {CRYPT}$2y$');
like(imap_login('carol', 'wrong', 8153), $refused, 'password mode: wrong password');
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8153), 'dan', 'dan-pw');
is($rc, 0, 'password mode: CRAM-MD5 against a {PLAIN} userPassword (imaplib)') or diag($out);
($rc, $out) = sasl_client('imap-cram', '127.0.0.1', port(8143), 'dan', 'dan-pw');
isnt($rc, 0, 'bind mode: CRAM-MD5 refused (no password to compute with)');

# TLS to the directory: verified with the CA that signed its certificate, refused with another
like(imap_login('alice', 'alice-pw', 8163), qr/^a01 OK/, 'ldaps://, server certificate verified');
like(imap_login('alice', 'alice-pw', 8173), qr/^a01 OK/, 'StartTLS, server certificate verified');
like(imap_login('alice', 'alice-pw', 8183), $temp, 'ldaps://, certificate of another CA: temporary failure');

# a wrong password repeated does not reach the directory again (each failed bind counts toward
# a lockout in Active Directory or ppolicy): one bind for four tries, another for a new password
sub binds {
	my ($rc, $out) = run_tool('ldapsearch', '-x', '-LLL', '-H', "ldap://127.0.0.1:$lport",
		'-b', 'cn=Bind,cn=Operations,cn=Monitor', '-s', 'base', 'monitorOpCompleted');
	die "ldapsearch: $out\n" if $rc;
	return $out =~ /monitorOpCompleted: (\d+)/ ? $1 : die "no bind count: $out\n";
}
# $user logs in $n times with the wrong password $pw: (how many were refused, how many binds the
# directory saw meanwhile, the counter's own left out)
sub tries {
	my ($user, $pw, $n) = @_;
	my $b0 = binds();
	my $refusals = grep { $_ =~ $refused } map { imap_login($user, $pw, 8193) } 1 .. $n;
	return ($refusals, binds() - $b0 - 1);
}
my ($refusals, $binds) = tries('alice', 'stale-pw', 4);
is($refusals, 4, 'a stale password repeated: refused each time');
is($binds, 1, 'the directory saw one bind for the four');
($refusals, $binds) = tries('alice', 'another-guess', 1);
is($refusals, 1, 'another wrong password refused');
is($binds, 1, '... after a bind of its own');
# an unknown user is answered the same way: a repeated password costs no bind either (else the
# round trip a repeat costs would tell unknown users from known ones), a new user name one bind
($refusals, $binds) = tries('nobody-here', 'stale-pw', 4);
is($refusals, 4, 'an unknown user, a password repeated: refused each time');
is($binds, 1, 'the directory saw one bind for the four, as for a known user');
($refusals, $binds) = tries('nobody-else', 'stale-pw', 1);
is($refusals, 1, 'another unknown user, the same password: refused');
is($binds, 1, '... after a bind of its own, as another known user would be');
like(imap_login('alice', 'alice-pw', 8193), qr/^a01 OK/, 'the right password after them: accepted');

# the directory stops answering (SIGSTOP): the login waiting for it does not hold the event
# loop: another login and another location are answered meanwhile; a lookup past its
# query_timeout is a temporary failure; the waiting one is answered when the directory resumes
ok(stop_process($slapd_pid), 'directory stopped (SIGSTOP)');
my $slow = Test::Nginx::IMAP->new();
$slow->read();
$slow->send('a01 LOGIN "sloth" "sloth-pw"');
select undef, undef, undef, 0.3;
my @quick = (imap_login('local', 'local-pw', 8203) =~ /^a01 OK/ ? 1 : 0, http_get('/ping') =~ /pong/ ? 1 : 0);
ok(!IO::Select->new($slow->socket())->can_read(0), 'slow login still pending')
	or diag('the slow login got: ' . ($slow->read() // 'nothing (closed)'));
is("@quick", '1 1', 'meanwhile a login and another location answered');
like(imap_login('alice', 'alice-pw', 8193), $temp, 'a lookup waiting past query_timeout: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*ldap "ldap:\/\/127\.0\.0\.1:$lport": .*timed out/, 'the timeout logged');
kill 'CONT', $slapd_pid;
like($slow->read() // '', qr/^a01 OK/, 'directory resumed: the slow login answered');

# the directory killed mid-run: temporary failures (logged), then recovery without reload
slapd_stop();
like(imap_login('alice', 'alice-pw'), $temp, 'directory stopped: temporary failure');
slapd_start();
ok(wait_for(10, sub { imap_login('alice', 'alice-pw') =~ /^a01 OK/ }), 'directory restarted: recovered');

# the example nginx-conf/ldap.conf as it is (ports moved to free ones, the test's directory): a
# login through it, by mail address
{
	my $e = run_example('ldap.conf',
		sub { ${$_[0]} =~ s{ldap://127\.0\.0\.1:%%PORT_389%%}{ldap://127.0.0.1:$lport} or die "no ldap:// URL" },
		files => { 'ldap.pw' => "svc-pw\n" }, users => { alice => 'alice-pw' });
	my ($rc, $out) = real_client('imap', '127.0.0.1', port(1143), 'alice@example.org', 'alice-pw');
	is($rc, 0, 'nginx-conf/ldap.conf: login by mail address (imaplib)') or diag($out, $e->read_file('error.log'));
	like($e->read_file('imap.log'), qr/^imap ok user=alice pass=alice-pw$/m, 'nginx-conf/ldap.conf: the backend sees the uid');
	$e->stop();
	$e->stop_daemons();
}

# nginx -t: an unknown option, a filter without the user, a password attribute in bind mode,
# no thread pool
my $nt = sub { nginx_t_with($t, @_) };
my ($code, $msg) = $nt->(qr/ pool=2;/, ' pools=2;');
ok($code != 0 && $msg =~ /unknown option "pools=2"/, 'nginx -t: unknown option') or diag($msg);
($code, $msg) = $nt->(qr/"filter=[^"]*"/, '"filter=(objectClass=inetOrgPerson)"');
ok($code != 0 && $msg =~ /must name the user/, 'nginx -t: a filter without the user') or diag($msg);
($code, $msg) = $nt->(qr/mail_auth_ldap_attrs name=uid user=uid/, 'mail_auth_ldap_attrs password=userPassword name=uid user=uid');
ok($code != 0 && $msg =~ /in mode=bind the directory checks the password/, 'nginx -t: a password attribute in bind mode')
	or diag($msg);
($code, $msg) = $nt->(qr/location = \/auth-short \{/, "location = /auth-short {\n            mail_auth_thread_pool off;");
ok($code != 0 && $msg =~ /"mail_auth_ldap" needs a thread pool/, 'nginx -t: no thread pool') or diag($msg);
# a list that fails over from a TLS server to one in clear: whoever drops the TLS server's
# packets gets every password bound in clear (accepted before)
($code, $msg) = $nt->(qr/mail_auth_ldap ldaps:\/\/127\.0\.0\.1:(\d+) /,
	"mail_auth_ldap \"ldaps://127.0.0.1:$sport ldap://127.0.0.1:$lport\" ");
ok($code != 0 && $msg =~ /ldaps:\/\/ and ldap:\/\/ servers in one list/, 'nginx -t: TLS and clear servers in one list')
	or diag($msg);

# bearer tokens: the directory server matches names by its own rules (LDAP's caseIgnoreMatch takes a
# fullwidth "\x{ff41}lice" for alice): a token naming such a spelling would open another mailbox
$t->write_file('oauth.secret', "s\n");
($code, $msg) = $nt->(qr/location = \/auth-short \{/, "location = /auth-short {\n            "
	. "mail_auth_oauth2 introspect=http://127.0.0.1:1/i client_id=m client_secret_file=$d/oauth.secret;");
ok($code != 0 && $msg =~ /"mail_auth_oauth2" needs a store of the mailboxes/, 'nginx -t: no bearer tokens on this store')
	or diag($msg);

slapd_stop();

###############################################################################
