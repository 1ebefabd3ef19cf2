#!/usr/bin/perl

# Tests for ngx-mail-auth: a passwd-file seen through another link to its inode, as a Docker
# bind mount of the single file (-v /srv/users:/etc/nginx/users:ro) or a hard link shared with
# another reader. The host replaces the file by rename (mail-auth-user does): the mount point
# keeps the old inode, whose link count drops to 0. Read on, it served the old content (a
# deleted user still logging in) until a restart; now the store is broken: a temporary failure
# and an error-log line saying to bind-mount the directory instead. mail-auth-user warns when the
# file it replaces has other hard links (they keep the old content).
#
# Needs root (mount --bind); skipped where mounting is not permitted. The mount is undone at the
# end, and in an END block if the test dies first.

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

my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";
plan(skip_all => "mail-auth-user not built ($tool)") unless -x $tool;
plan(skip_all => 'mount --bind needs root') if $> != 0;
plan(skip_all => 'mount not installed') unless have_tool('mount') && have_tool('umount');

my $d = $t->testdir();

$t->write_file('users', "alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\n");
$t->write_file('mounted-users', '');
chmod 0644, "$d/users", "$d/mounted-users";

# the mount point, undone however the test ends (before Test::Nginx removes the directory)
my $mounted;
sub unmount {
	return unless $mounted;
	my ($rc, $out) = run_tool('umount', '-l', $mounted);
	diag("umount $mounted: $out") if $rc != 0;
	$mounted = undef;
}
END { unmount(); }

{
	my ($rc, $out) = run_tool('mount', '--bind', "$d/users", "$d/mounted-users");
	plan(skip_all => "mount --bind not permitted here: $out") if $rc != 0;
	$mounted = "$d/mounted-users";
}

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
            mail_auth_passwd_file %%TESTDIR%%/mounted-users;
            mail_auth_backend imap 127.0.0.1:8145;
            mail_auth_fail_wait 0;
        }
    }
}

EOF

$t->run()->plan(7);

# the Auth-Status of an IMAP login
sub status {
	my ($user, $pass) = @_;
	my $r = auth_http('/auth', 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => $pass,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1') // '';
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

###############################################################################

is(status('alice', 'alice-pw'), 'OK', 'alice logs in through the bind-mounted file');

# the host deletes alice: mail-auth-user renames a new file over the source path
my ($rc, $out) = run_tool($tool, '--passwd-file', "$d/users", 'del', 'alice');
is($rc, 0, 'alice deleted on the host') or diag($out);

ok(wait_for(5, sub { status('alice', 'alice-pw') =~ /Temporary/ }),
	'the mounted file has no name left: a temporary failure, not the old content');
like(status('bob', 'bob-pw'), qr/Temporary/, '... for every user (never the old content)');
like($t->read_file('error.log'), qr/mounted-users: the file was replaced or removed outside this mount.*bind-mount its directory instead/,
	'the error log says why and what to do');

unmount();

# a hard link: the tool says that replacing the file breaks it
$t->write_file('apps', "carol:{PLAIN}carol-pw\n");
link("$d/apps", "$d/apps-dovecot") or die "link: $!\n";
($rc, $out) = run_tool($tool, '--passwd-file', "$d/apps", 'del', 'carol');
like($out, qr/warning: .*apps has 1 other hard link: replacing it .* breaks them/,
	'mail-auth-user warns that the rename breaks a hard link');
like($t->read_file('apps-dovecot'), qr/^carol:/m, '... whose name keeps the old content (as it said)');

###############################################################################
