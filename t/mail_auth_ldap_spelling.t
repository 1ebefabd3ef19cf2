#!/usr/bin/perl

# Tests for ngx-mail-auth: the per-user budget of mail_auth_limit counts the LDAP account, not
# the spelling of its name. LDAP's equality rules for uid (caseIgnoreMatch) ignore case and
# leading/trailing spaces (a no-break space too), and compare compatibility forms (a fullwidth
# "a"): " alice", "alice ", "ALICE" and "\x{ff41}lice" find alice's entry. (Before: each spelling had a budget of its own, so a guesser banned as
# "alice" went on as " alice", "  alice", "alice " ... and logged in with the right password
# while alice was banned.) Against a throwaway OpenLDAP slapd on loopback.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;
use MailAuthLdap;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

ldap_skip_unless_installed();

my $t = Test::Nginx->new()->has(qw/http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
workers_can_read($t);

my $d = $t->testdir();
my $lport = port(8389);
my $base = 'dc=example,dc=org';

mkdir "$d/ldap-db" or die;
$t->write_file('slapd.conf', slapd_conf_head($d, qw/ core cosine inetorgperson /) . <<"EOF");
database mdb
suffix "$base"
rootdn "cn=admin,$base"
rootpw admin-pw
directory $d/ldap-db
index objectClass,uid eq
access to attrs=userPassword by anonymous auth by * none
access to * by * read
EOF

my ($rc, $hash) = run_tool('slappasswd', '-h', '{SSHA}', '-s', 'alice-pw');
die "slappasswd failed: $hash\n" if $rc;
$hash =~ s/\s+\z//;
$t->write_file('tree.ldif', <<"EOF");
dn: $base
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,$base
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,$base
objectClass: inetOrgPerson
uid: alice
cn: alice
sn: alice
userPassword: $hash

EOF
my $out;
($rc, $out) = run_tool('slapadd', '-f', "$d/slapd.conf", '-l', "$d/tree.ldif");
die "slapadd failed: $out\n" if $rc;

slapd_run($d, "ldap://127.0.0.1:$lport/", $lport);

$t->write_file_expand('nginx.conf', <<"EOF");

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_ldap ldap://127.0.0.1:$lport base=ou=people,$base;
            mail_auth_backend imap 127.0.0.1:1143;
            mail_auth_fail_wait 0;
            mail_auth_limit zone=spelling:1m user=3/m;
        }
    }
}

EOF

$t->run()->plan(3);

###############################################################################

# Auth-User escaped as nginx mail escapes it (space as %20)
sub login {
	my ($user, $pass, $ip) = @_;
	my $r = auth_http('/auth', 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => $pass,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip);
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

login('alice', "wrong-$_", "127.0.0.$_") for 1 .. 3;
isnt(login('alice', 'alice-pw', '127.0.0.9'), 'OK', 'alice banned after 3 guesses (user=3/m)');

my @ok = grep { login($_, 'alice-pw', '127.0.0.10') eq 'OK' } ('%20alice', 'alice%20', 'ALICE', '%20%20alice',
	"alice\xc2\xa0", "\xef\xbd\x81lice");
is("@ok", '', 'other spellings of alice are banned with her');

login($_, 'more-guesses', '127.0.0.11') for '%20alice', 'alice%20', '%20%20alice', 'al%20ice';
my $checked = () = $t->read_file('error.log') =~ /result=invalid/g;
is($checked, 3, 'guesses checked for alice in all spellings: 3');

###############################################################################
