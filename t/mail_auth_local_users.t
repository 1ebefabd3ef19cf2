#!/usr/bin/perl

# Tests for ngx-mail-auth: other local users and the auth_http listener (README, Security model).
# Every process on the host can reach a loopback listener, and nginx makes its unix listen
# sockets 0666: anyone could send the mail_auth location requests as nginx mail, claiming any
# Client-IP or certificate. The README's way out for a shared host is a unix socket in a
# directory only nginx's users may enter. This checks both halves with a real other user
# ("daemon"): the plain socket is open to it, the one in the directory is not, and nginx mail
# itself (its workers, "nobody" here) still logs in through it. Runs as root only.

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

plan(skip_all => 'not root') unless $> == 0;
my $other = getpwnam('daemon');
my $wgid = (getpwnam('nobody'))[3];
plan(skip_all => 'no "daemon" and "nobody" users') unless defined $other && defined $wgid;
plan(skip_all => 'runuser, python3 or openssl not installed')
	unless have_tool('runuser') && have_tool('python3') && have_tool('openssl');

my $t = Test::Nginx->new()->has(qw/mail imap http/);
workers_can_read($t);
my $d = $t->testdir();

# the directory only nginx's users enter: root's, its workers' group (nobody's here)
mkdir "$d/private" or die "mkdir: $!";
chown 0, $wgid, "$d/private" or die "chown: $!";
chmod 0750, "$d/private" or die "chmod: $!";

$t->write_file('users', 'alice:' . make_hash('openssl-6', 'alice-pw') . "\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       unix:%%TESTDIR%%/open.sock;
        listen       unix:%%TESTDIR%%/private/auth.sock;
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
    auth_http  unix:%%TESTDIR%%/private/auth.sock:/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", alice => 'alice-pw');
$t->run()->plan(3);
$t->waitforsocket('127.0.0.1:' . port(8144));

###############################################################################

# another local user sends an auth_http request to a socket: 'answered' or why not
sub as_other {
	my ($sock) = @_;
	my $py = 'import socket,sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused: %s" % e.strerror); sys.exit(0)
s.sendall(b"GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: alice\r\n"
          b"Auth-Pass: guess\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\n\r\n")
print("answered" if b"Auth-Status" in s.recv(4096) else "no answer")';
	my ($rc, $out) = run_tool('runuser', '-u', 'daemon', '--', 'python3', '-c', $py, $sock);
	$out =~ s/\s+\z//;
	return $out;
}

is(as_other("$d/open.sock"), 'answered', 'a socket nginx made (0666): another local user is answered');
like(as_other("$d/private/auth.sock"), qr/^refused: Permission denied/,
	'the socket in a directory of nginx\'s users only: another local user cannot connect');

my $s = Test::Nginx::IMAP->new();
$s->read();
$s->send('a01 LOGIN alice alice-pw');
like($s->read() // '', qr/^a01 OK/, 'nginx mail logs in through that socket');

###############################################################################
