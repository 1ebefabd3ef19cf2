#!/usr/bin/perl

# Tests for ngx-mail-auth: the module built by scripts/package for the distribution's own nginx
# (Debian 12: nginx 1.22 + libnginx-mod-mail) loads into that packaged binary, passes nginx -t,
# and authenticates one IMAP login through its mail proxy. CVE-2026-27651: a refused CRAM-MD5
# login keeps its Auth-Wait when the installed package has Debian's backported fix
# (1.22.1-9+deb12u5 and later, which scripts/package tells the build), else gets Auth-Wait 0;
# "mail_auth_nginx_auth_wait_fixed off" gets 0 in any case.
# The .deb's maintainer scripts keep the modules-enabled link the administrator's, as Debian's
# own module packages do (dh_nginx): made at the first install, left removed on upgrade.
# TEST_MAIL_AUTH_DEBIAN_SO: the .so scripts/package built, TEST_MAIL_AUTH_DEBIAN_DEB its .deb
# (scripts/test sets them).

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

my $so = $ENV{TEST_MAIL_AUTH_DEBIAN_SO};
my $deb = '/usr/sbin/nginx';
my $mail = '/usr/lib/nginx/modules/ngx_mail_module.so';
plan(skip_all => 'TEST_MAIL_AUTH_DEBIAN_SO not set (scripts/test sets it after scripts/package)')
	unless $so && -f $so;
plan(skip_all => "Debian's nginx or libnginx-mod-mail not installed") unless -x $deb && -f $mail;
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

$Test::Nginx::NGINX = $deb;
my $t = Test::Nginx->new();
workers_can_read($t);
my $d = $t->testdir();
$t->write_file('users', 'alice:' . make_hash('htpasswd-B', 'alice-pw') . "\n");

# No %%TEST_GLOBALS%% (its load_module line is for the vendored nginx): the harness then puts
# the test directory's pid and error log on the command line.
$t->write_file_expand('nginx.conf', <<"EOF");

load_module $mail;
load_module $so;

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
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
        }

        location = /unpatched {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_nginx_auth_wait_fixed off;
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

my $out = `$deb -t -p $d/ -c nginx.conf -e error.log -g "pid $d/nginx.pid;" 2>&1`;
my $test_ok = $? == 0;

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", alice => 'alice-pw');
$t->run()->plan(17);
$t->waitforsocket('127.0.0.1:' . port(8144));

###############################################################################

ok($test_ok, "nginx -t passes with the module in Debian's nginx") or diag($out);
like(`$deb -v 2>&1`, qr{nginx/1\.22\.}, "the binary is the distribution's nginx 1.22");
my ($rc, $msg) = real_client('imap', '127.0.0.1', port(8143), 'alice', 'alice-pw');
is($rc, 0, 'IMAP login through the packaged nginx with the module') or diag($msg);
like($t->read_file('backend.log'), qr/^imap ok user=alice pass=alice-pw$/m, 'backend reached');

my $debver = `dpkg-query -W -f='\${Version}' nginx-common 2>/dev/null`;
my $fixed = $debver =~ /^1\.22\.1-9\+deb12u(\d+)$/ && $1 >= 5;
my %cram = ('Auth-Method' => 'cram-md5', 'Auth-User' => 'alice', 'Auth-Pass' => '0' x 32,
	'Auth-Salt' => '<1.2@localhost>', 'Auth-Protocol' => 'imap', 'Client-IP' => '127.0.0.1');
like(auth_http('/auth', %cram), $fixed ? qr/^Auth-Wait: 3\r$/m : qr/^Auth-Wait: 0\r$/m,
	"refused CRAM-MD5 on Debian's nginx $debver: Auth-Wait " . ($fixed ? '3 (has the fix)' : '0'));
like(auth_http('/unpatched', %cram), qr/^Auth-Wait: 0\r$/m,
	'refused CRAM-MD5 with "mail_auth_nginx_auth_wait_fixed off": Auth-Wait 0');
like($t->read_file('error.log'), $fixed
	? qr/\[notice\].*get the usual Auth-Wait \(the build: nginx\/1\.22\.1 has the CVE-2026-27651 fix, as the module's build was told\)/
	: qr/\[notice\].*get "Auth-Wait: 0".*the build: nginx\/1\.22\.1/,
	'the configuration-time line says what the build knows');

# the .deb: its maintainer scripts run as dpkg would, in a directory of their own ($DPKG_ROOT)

SKIP: {
	my $pkg = $ENV{TEST_MAIL_AUTH_DEBIAN_DEB};
	skip 'TEST_MAIL_AUTH_DEBIAN_DEB not set (scripts/test sets it)', 10 unless $pkg && -f $pkg;
	my @files = `dpkg-deb -c $pkg`;
	is(join('', grep { m{ \./etc/} } @files), '', 'the .deb ships nothing under /etc (the link is made by postinst)');
	my $root = "$d/dpkg-root";
	my $link = "$root/etc/nginx/modules-enabled/50-mod-http-mail-auth.conf";
	system('dpkg-deb', '-e', $pkg, "$d/DEBIAN") == 0 or die "dpkg-deb -e failed\n";
	my $run = sub {
		my ($script, @args) = @_;
		local $ENV{DPKG_ROOT} = $root;
		return -x "$d/DEBIAN/$script" && system("$d/DEBIAN/$script", @args) == 0;
	};
	$run->('postinst', 'configure', '');
	is(readlink($link), '/usr/share/nginx/modules-available/mod-http-mail-auth.conf', 'first install: module enabled');
	unlink $link;
	my $said = `DPKG_ROOT=$root $d/DEBIAN/postinst configure 0.1.0+nginx1.22.1 2>&1`;
	ok(!-l $link, 'upgrade: a link the administrator removed stays removed');
	# a reload keeps the module nginx has loaded (the C library hands back the copy it has)
	like($said, qr/restart nginx .* a reload keeps the module nginx has loaded/, 'upgrade: postinst says to restart nginx');
	unlike(`DPKG_ROOT=$root $d/DEBIAN/postinst configure '' 2>&1`, qr/restart/, '... not at a first install');
	unlink $link;
	$run->('postinst', 'configure', '') or die;
	$run->('prerm', 'remove') && $run->('postrm', 'remove') or die;
	ok(!-l $link && -l "$link.removed", 'remove: the link put aside');
	$run->('postinst', 'configure', '0.1.0+nginx1.22.1') or die;
	ok(-l $link && !-l "$link.removed", 'reinstall after remove: enabled again');
	# an upgrade from a package that shipped the link as a file of its own: dpkg deletes it
	# between preinst and postinst (it is not in the new package); put back
	$run->('preinst', 'upgrade', '0.1.0+nginx1.22.1') or die "no preinst\n";
	unlink $link;
	$run->('postinst', 'configure', '0.1.0+nginx1.22.1') or die;
	ok(-l $link && !-e "$link.upgrading", 'upgrade from a package that shipped the link: still enabled');
	# ... but a link the administrator removed before the upgrade stays removed
	unlink $link;
	$run->('preinst', 'upgrade', '0.1.0+nginx1.22.1') && $run->('postinst', 'configure', '0.1.0+nginx1.22.1') or die;
	ok(!-l $link, 'upgrade: a link removed before it stays removed');
	# an upgrade given up after preinst leaves no note behind (a later configure would put back
	# a link the administrator removes meanwhile)
	$run->('postinst', 'configure', '') or die;
	$run->('preinst', 'upgrade', '0.1.0+nginx1.22.1') && $run->('postrm', 'abort-upgrade', '0.1.0+nginx1.22.1') or die;
	ok(!-e "$link.upgrading", 'an aborted upgrade: no note left');
}

###############################################################################
