#!/usr/bin/perl

# Tests for ngx-mail-auth: the passwd-file store while nginx runs. An atomically replaced file
# (new file + rename, as htpasswd and config management do) is picked up without a reload; a
# deleted or unreadable file gives a temporary failure (never OK, never a stale answer) and the
# store recovers when the file comes back. Logins go through nginx's mail proxy (IMAP).

###############################################################################

use warnings;
use strict;

use Test::More;
use POSIX ();

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;
use MailAuthAttack;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap http/);
workers_can_read($t);
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

my $d = $t->testdir();
system('htpasswd', '-cbB', '-C', '5', "$d/users", 'alice', 'first-password') == 0
	or die "htpasswd failed\n";

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
            mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
            mail_auth_fail_wait 0;
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

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log",
	alice => '*', bob => '*', dan => '*', big => '*', tooluser => 'tool pw', cu0 => 'revoked pw', map { ("cu$_" => "cu pw $_") } 1 .. 8);
$t->run()->plan(36);
$t->waitforsocket('127.0.0.1:' . port(8144));

sub login {
	my ($user, $pass) = @_;
	my $s = Test::Nginx::IMAP->new();
	$s->read();
	$s->send(qq{a01 LOGIN "$user" "$pass"});
	return $s->read() // '';
}

# the store re-checks the file at most once a second: poll for the expected answer
sub eventually {
	my ($user, $pass, $re) = @_;
	return wait_for(5, sub { login($user, $pass) =~ $re }) ? 1 : 0;
}

###############################################################################

like(login('alice', 'first-password'), qr/^a01 OK/, 'login with the first password');

# replace atomically: a new file renamed over the old one (a new inode)

system('htpasswd', '-cbB', '-C', '5', "$d/users.new", 'alice', 'second-password') == 0
	or die "htpasswd failed\n";
system('htpasswd', '-bB', '-C', '5', "$d/users.new", 'bob', 'bob-password') == 0
	or die "htpasswd failed\n";
rename("$d/users.new", "$d/users") or die "rename: $!\n";

ok(eventually('bob', 'bob-password', qr/^a01 OK/), 'new user usable without reload');
like(login('alice', 'first-password'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login/, 'old password refused');
like($t->read_file('error.log'), qr/mail_auth: .*users: changed, reloaded 2 users/,
	'reload of the file logged');

# in-place edit by htpasswd itself (htpasswd rewrites the file)

system('htpasswd', '-bB', '-C', '5', "$d/users", 'bob', 'bob-new') == 0 or die;
ok(eventually('bob', 'bob-new', qr/^a01 OK/), 'edited file re-read: new password works');
like(login('bob', 'bob-password'), qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login/, 'old password refused after edit');

# deleted: a temporary failure, not OK and not "invalid"

rename("$d/users", "$d/users.saved") or die;
ok(eventually('alice', 'second-password', qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/),
	'missing file: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*mail_auth: .*users: cannot .*No such file/,
	'missing file: error logged with path and cause');
# ... while nginx runs; at start (nginx -t, a reload) a missing file is a configuration error
my ($rc, $out) = nginx_t_with($t, qr!mail_auth_passwd_file \S+/users;!, "mail_auth_passwd_file $d/no-such-users;");
ok($rc != 0 && $out =~ /\[emerg\].*passwd file "\Q$d\E\/no-such-users": cannot open: No such file/,
	'missing file at start: nginx -t refuses the configuration') or diag($out);

# restored: recovery without reload

rename("$d/users.saved", "$d/users") or die;
ok(eventually('alice', 'second-password', qr/^a01 OK/), 'restored file: logins work again');
like($t->read_file('error.log'), qr/users: readable again/, 'recovery logged');

# users managed with the admin tool (mail-auth-user --passwd-file)

my $tool = $ENV{TEST_MAIL_AUTH_USER} || "$FindBin::Bin/../target/release/mail-auth-user";
SKIP: {
	skip "mail-auth-user not built ($tool)", 5 unless -x $tool;
	system($tool, '--passwd-file', "$d/users", 'add', 'tooluser', '--password', 'tool pw',
		'--scheme', 'sha512-crypt') == 0 or die "mail-auth-user failed\n";
	ok(eventually('tooluser', 'tool pw', qr/^a01 OK/), 'user added by mail-auth-user logs in');
	system($tool, '--passwd-file', "$d/users", 'disable', 'tooluser') == 0 or die;
	ok(eventually('tooluser', 'tool pw', qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login/), 'disabled by the tool: refused');
	like($t->read_file('users'), qr/^#disabled# tooluser:\$6\$/m, 'the line is kept, commented out');
	# htpasswd (which takes '#' lines for comments) adds the user again after the disable: the
	# tool's disable must disable that line too (it changed nothing, exited 0, and the new line
	# kept logging in)
	system('htpasswd', '-bB', '-C', '5', "$d/users", 'tooluser', 'tool pw') == 0 or die "htpasswd failed\n";
	ok(eventually('tooluser', 'tool pw', qr/^a01 OK/), 'added again by htpasswd: logs in');
	system($tool, '--passwd-file', "$d/users", 'disable', 'tooluser') == 0 or die;
	ok(eventually('tooluser', 'tool pw', qr/^a01 NO \[AUTHENTICATIONFAILED\] Invalid login/),
		'disabled by the tool again: the line htpasswd added is disabled too');
}

# a password typed at a terminal: asked for, not echoed (before: no prompt, and the password
# shown on the screen, in its scroll-back and in session recordings)
SKIP: {
	skip "mail-auth-user not built ($tool)", 2 unless -x $tool;
	my $py = <<'PY';
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, sent, end = b"", False, time.time() + 10
while time.time() < end:
    if not select.select([fd], [], [], 0.2)[0]:
        continue
    try:
        data = os.read(fd, 1024)
    except OSError:
        break
    if not data:
        break
    out += data
    if not sent and b"Password:" in out:
        os.write(fd, b"typed pw 42\n")
        sent = True
if not sent:
    os.kill(pid, 9)  # never asked (the tool waits for a line): stopped, not waited on for ever
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
PY
	$t->write_file('type_at_tty.py', $py);
	my $shown = `python3 $d/type_at_tty.py $tool --passwd-file $d/users add ttyuser --scheme sha512-crypt 2>&1`;
	ok($shown =~ /Password:/ && $shown !~ /typed pw 42/, 'a password typed at a terminal is asked for and not echoed')
		or diag($shown);
	# (the module's verdict: the test's IMAP backend knows no ttyuser)
	ok(wait_for(5, sub { login('ttyuser', 'typed pw 42');
			$t->read_file('error.log') =~ /user="ttyuser" [^\n]*result=ok / }),
		'and it is the password set');
}

# concurrent runs of the admin tool (an operator's script and a self-service page at once): each
# reads, hashes, then writes the file. Every change must survive, above all a deletion (a
# revoked user put back by another run's stale copy would log in again).

SKIP: {
	skip "mail-auth-user not built ($tool)", 3 unless -x $tool;
	system($tool, '--passwd-file', "$d/users", 'add', 'cu0', '--password', 'revoked pw',
		'--scheme', 'sha512-crypt') == 0 or die "mail-auth-user failed\n";
	ok(eventually('cu0', 'revoked pw', qr/^a01 OK/), 'user to be revoked logs in');
	my @pids;
	for my $i (0 .. 8) {
		my @cmd = $i == 0
			? ($tool, '--passwd-file', "$d/users", 'del', 'cu0')
			: ($tool, '--passwd-file', "$d/users", 'add', "cu$i", '--password', "cu pw $i",
				'--scheme', 'bcrypt', '--cost', '8');
		my $pid = fork() // die "fork: $!\n";
		if ($pid == 0) {
			exec(@cmd) or POSIX::_exit(127);
		}
		push @pids, $pid;
	}
	my $failed = 0;
	for my $pid (@pids) {
		waitpid($pid, 0);
		$failed++ if $? != 0;
	}
	my $file = $t->read_file('users');
	my @missing = grep { $file !~ /^cu$_:/m } 1 .. 8;
	is("@missing", '', "8 users added at once by 8 runs ($failed failed): none lost");
	ok(eventually('cu0', 'revoked pw', qr/^a01 NO \[AUTHENTICATIONFAILED\]/)
		&& $file !~ /^cu0:/m, 'a user deleted meanwhile stays deleted');
}

# a malformed first definition of a user keeps the name: skipped alone, it handed dan to a later
# line without its allow_nets (dan logged in from anywhere)

open my $fh, '>>', "$d/users" or die;
print $fh "dan:{PLAIN}dan pw::::::allow_nets=10.0.0.0/8,bogus\n", "dan:{PLAIN}dan pw\n";
close $fh;
ok(eventually('dan', 'dan pw', qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/),
	'a malformed first line of dan: temporary failure, not the later line\'s OK');
like($t->read_file('error.log'), qr/users:\d+: duplicate user "dan" \(first defined on line \d+\)/,
	'the later line is logged as a duplicate');
like(login('alice', 'second-password'), qr/^a01 OK/, 'other users log in');

# a file put in place with its times kept from a host whose clock is an hour ahead (rsync -a,
# cp -p, tar x), its last line without a line end: served at once, not held back (the old
# content answering) until that time came

open $fh, '>', "$d/users.future" or die;
print $fh "alice:{PLAIN}future pw";
close $fh;
utime(time() + 3600, time() + 3600, "$d/users.future") or die;
rename("$d/users.future", "$d/users") or die;
ok(eventually('alice', 'future pw', qr/^a01 OK/), 'a file stamped an hour ahead: served');

# a line over 64 KiB (here 80 KiB of extra fields) is malformed: never parsed, its user held
# (before, it was parsed again at every login of its user, on the event loop)

open $fh, '>', "$d/users.long" or die;
print $fh "alice:{PLAIN}future pw\n", 'big:{PLAIN}big pw::::::' . ('x=1 ' x 20480) . "\n", "big:{PLAIN}big pw\n";
close $fh;
rename("$d/users.long", "$d/users") or die;
ok(eventually('big', 'big pw', qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/),
	'a user whose first line is over 64 KiB: temporary failure, not the later line\'s OK');
like($t->read_file('error.log'), qr/users:2: line of \d+ bytes \(at most 65536\), line skipped/, 'logged');


# nginx's master reads the file at start and at a reload. A reload in the middle of a rewrite in
# place (`cat >`, htpasswd) read a cut last line and served it: bob's {PLAIN} password cut to
# "bob-lo" logged in. Now that line is left out until the file has not changed for 2 s, its
# user a temporary failure meanwhile (there is no previous content to answer with), and the
# workers read the file again once it has settled.

my $from = length $t->read_file('error.log');
$t->write_file('users', "alice:{PLAIN}alice-password\nbob:{PLAIN}bob-lo");
ok(reload_and_wait($t), 'reload while the file is half written: new workers');
utime(undef, undef, "$d/users") or die;   # the writer is still at it
like(login('bob', 'bob-lo'), qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/,
	'reload read a cut last line: its user a temporary failure, not OK with the cut password');
like(login('alice', 'alice-password'), qr/^a01 OK/, 'the whole lines before it are served');
like(substr($t->read_file('error.log'), $from),
	qr/\[warn\].*users:2: no line end, and the file changed less than 2 s ago.*user "bob"/,
	'the line left out is logged');
open $fh, '>>', "$d/users" or die;
print $fh 'ng-password';                  # the rest of the line (the file still without a line end)
close $fh;
ok(wait_for(8, sub { login('bob', 'bob-long-password') =~ /^a01 OK/ }),
	'once the file settled (2 s), the workers read it again: the whole password logs in');

# a file only root can read: nginx's master (root) reads it at start and reload, the workers
# (another user) never opened it, and found out only at its first change: every login a
# temporary failure from then on. Now a worker's first lookup opens it: a temporary failure
# and an error line at once. (A reload starts new workers on the master's read as a start
# does.)

my @w = worker_pids(master_pid($t));
SKIP: {
	skip 'nginx workers run as root (the test is not run as root): file permissions do not stop them', 4
		if $> != 0 || !@w || grep { (uid_of($_) // 0) == 0 } @w;

	$t->write_file('users', "alice:{PLAIN}alice-password\n");
	chmod 0600, "$d/users" or die;
	$from = length $t->read_file('error.log');
	ok(reload_and_wait($t), 'reload with a file only root can read: new workers');
	like(login('alice', 'alice-password'), qr/^a01 NO \[UNAVAILABLE\] Temporary server problem/,
		'a file the workers cannot read: the first login is a temporary failure');
	like(substr($t->read_file('error.log'), $from),
		qr/\[error\].*mail_auth: \Q$d\E\/users: cannot open: Permission denied/,
		'and the error log names the file');
	chmod 0644, "$d/users" or die;
	ok(eventually('alice', 'alice-password', qr/^a01 OK/), 'made readable: logins work without a reload');
}
###############################################################################
