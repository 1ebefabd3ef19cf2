#!/usr/bin/perl

# Tests for ngx-mail-auth: PBKDF2 hashes as other systems store them, verified by the module in
# the real nginx. The passwd-file holds hashes made at test time by the real tools: Dovecot's
# `doveadm pw -s PBKDF2` ({PBKDF2}$1$..., its default 5000 rounds and 20000), and Debian's
# python3-passlib: $pbkdf2$, $pbkdf2-sha256$, $pbkdf2-sha512$ at passlib's default rounds,
# Django's pbkdf2_sha256$ / pbkdf2_sha1$, and Mailu's {PBKDF2}$pbkdf2-sha512$. Each logs in
# with its password and fails with a wrong one (auth_http requests as nginx mail sends them).
# A hostile line asking for more rounds than the module allows fails at once, as scheme-error.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);

# Debian's python3 by path: a pyenv or venv python3 first in PATH may lack passlib.
my $PY = '/usr/bin/python3';
plan(skip_all => 'doveadm not installed') unless have_tool('doveadm');
plan(skip_all => 'python3-passlib not installed')
	unless (run_tool($PY, '-c', 'import passlib.hash'))[0] == 0;

# Spaces, '%', ':' and UTF-8 in the password (bytes): it arrives %-escaped in Auth-Pass.
my $PW = 'pa ss%w:ö€rd';

sub tool {
	my ($rc, $out) = run_tool(@_);
	die "@_[0 .. 2]...: exit $rc: $out\n" if $rc != 0;
	$out =~ s/\s+\z//;
	return $out;
}

sub doveadm { tool('doveadm', '-o', 'stats_writer_socket_path=', 'pw', '-s', 'PBKDF2', @_, '-p', $PW) }

# passlib.hash.<handler>.hash(PW), optionally .using(rounds=N)
sub passlib {
	my ($handler, $rounds) = @_;
	my $using = defined $rounds ? ".using(rounds=$rounds)" : '';
	return tool($PY, '-c',
		"import sys; from passlib.hash import $handler as h; print(h$using.hash(sys.argv[1]))", $PW);
}

my %users = (
	dovecot => doveadm(),
	dovecot_20k => doveadm('-r', '20000'),
	passlib_sha1 => passlib('pbkdf2_sha1'),
	passlib_sha256 => passlib('pbkdf2_sha256'),
	passlib_sha512 => passlib('pbkdf2_sha512'),
	django_sha256 => passlib('django_pbkdf2_sha256'),
	django_sha1 => passlib('django_pbkdf2_sha1'),
	mailu => '{PBKDF2}' . passlib('pbkdf2_sha512', 10000),
);

# More rounds than the module allows (10^7): refused before any work.
my $hostile = '{PBKDF2}$1$salt$999999999$2b50b7e8b946f17b8897f97b4973eae8a39667f3';

$t->write_file('users', join('', map { "$_:$users{$_}\n" } sort keys %users) . "hostile:$hostile\n");

$t->write_file_expand('nginx.conf', <<'EOF');

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
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:1143;
            mail_auth_fail_wait 0;
        }
    }
}

EOF

$t->run()->plan(3 + 2 * (keys %users) + 3);

###############################################################################

like($users{dovecot}, qr/^\{PBKDF2\}\$1\$[^\$]+\$5000\$[0-9a-f]{40}$/, 'doveadm wrote {PBKDF2}$1$salt$5000$hex');
like($users{passlib_sha256}, qr/^\$pbkdf2-sha256\$\d+\$[.\/A-Za-z0-9]+\$[.\/A-Za-z0-9]{43}$/,
	'passlib wrote $pbkdf2-sha256$ in ab64');
like($users{django_sha256}, qr/^pbkdf2_sha256\$\d+\$\w+\$[+\/A-Za-z0-9]{43}=$/, 'and Django\'s form');

sub escape {
	my ($s) = @_;
	$s =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord $1)/ge;
	return $s;
}

sub status {
	my ($user, $pass) = @_;
	my $r = auth_http('/auth', 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => escape($pass),
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1',
		'Client-Host' => '[UNAVAILABLE]');
	return $r =~ /^Auth-Status: ([^\r\n]*)\r$/m ? $1 : "no Auth-Status in: $r";
}

my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';

for my $user (sort keys %users) {
	is(status($user, $PW), 'OK', "$user: right password ($users{$user})");
	is(status($user, "${PW}x"), $INVALID, "$user: wrong password");
}

my $start = time;
is(status('hostile', $PW), $INVALID, 'rounds above the bound: refused');
cmp_ok(time - $start, '<', 3, 'refused at once');
like($t->read_file('error.log'), qr/user="hostile" .*result=scheme-error reason="[^"]*malformed PBKDF2 \(rounds\)/,
	'logged as scheme-error with the reason');

###############################################################################
