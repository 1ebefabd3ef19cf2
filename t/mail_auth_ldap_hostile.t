#!/usr/bin/perl

# Tests for ngx-mail-auth: the LDAP store (mail_auth_ldap) facing a directory that answers
# what no directory should (a broken, compromised or impersonated server on a plain ldap://
# link). A fake LDAP server, written here, answers each search with one kind of bad reply:
#   - an entry whose DN is not UTF-8, and one whose attribute list is not a SEQUENCE (the
#     ldap3 crate panics on both while it builds the entry: the panic is the module's own
#     to catch, in the pool thread),
#   - bytes that are no LDAP message at all,
#   - two entries for one user (the search asked for at most two, and the module takes none),
#   - an entry, then a bind for that entry's DN that the directory answers "success" even for
#     an empty password (an empty password never reaches the directory).
# For each: never OK, a temporary failure (NO [UNAVAILABLE]) through the real mail proxy or an
# auth_http answer, an error-log line that says why, and no worker lost (the same worker pid
# answers before and after, and a passwd-file location still logs in).

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use POSIX qw//;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use Test::Nginx::IMAP;
use MailAuthAttack;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/mail imap http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'openssl not installed') unless have_tool('openssl');
workers_can_read($t);

my $d = $t->testdir();
my %kinds = (baddn => 8391, badattrs => 8392, garbage => 8393, two => 8394, emptybind => 8395);
my $base = 'ou=people,dc=example,dc=org';

$t->write_file('users', "local:" . make_hash('openssl-6', 'local-pw') . "\n");

my $locations = join('', map { <<"EOF" } sort keys %kinds);
        location = /auth-$_ {
            mail_auth;
            mail_auth_ldap ldap://127.0.0.1:${\ port($kinds{$_}) } base=$base "filter=(uid=%u)"
                           connect_timeout=2s query_timeout=5s pool=1;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
            mail_auth_fail_wait 0;
        }
EOF

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

$locations
        location = /auth-local {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:%%PORT_8145%%;
        }
    }
}

mail {
    auth_http_header X-Test 1;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-baddn;
    }

    server {
        listen     127.0.0.1:8153;
        protocol   imap;
        auth_http  127.0.0.1:8080/auth-local;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8145), "$d/backend.log", alice => 'alice-pw', local => 'local-pw');
$t->run_daemon(\&fake_ldap, $_, port($kinds{$_}), "$d/ldap-$_.log") for sort keys %kinds;
$t->run()->plan(23);
$t->waitforsocket('127.0.0.1:' . port($_)) for 8145, map { $kinds{$_} } sort keys %kinds;

###############################################################################

my $temp = '[UNAVAILABLE] Temporary server problem, try again later';

# one auth_http request as nginx mail makes it: its Auth-Status ('none' if no answer)
sub status {
	my ($kind, $user, $pass) = @_;
	my $r = auth_http("/auth-$kind", 'Auth-Method' => 'plain', 'Auth-User' => $user,
		'Auth-Pass' => $pass, 'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1,
		'Client-IP' => '192.0.2.1');
	return 'none' unless defined $r;
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

sub log_lines {
	my ($t, $re) = @_;
	return scalar grep { /$re/ } split /\n/, $t->read_file('error.log');
}

my $workers = join(',', worker_pids(master_pid($t)));
ok($workers, "worker pids $workers");

# an entry the ldap3 crate can't build: a panic in the pool thread, caught
like(imap_login('alice', 'alice-pw', 8143), qr/^a01 NO \Q$temp\E/, 'DN not UTF-8: temporary failure through the mail proxy');
is(status('baddn', 'alice', 'wrong'), $temp, 'DN not UTF-8, a wrong password: temporary failure');
is(status('badattrs', 'alice', 'alice-pw'), $temp, 'attributes not a SEQUENCE: temporary failure');
is(status('badattrs', 'alice', 'alice-pw'), $temp, 'again (the connection was dropped and made anew)');
ok(log_lines($t, qr/\[error\].*malformed answer from the server/) >= 3, 'the malformed answers are logged as such');
like($t->read_file('ldap-baddn.log'), qr/search uid=alice/, 'the fake directory was asked');

# not LDAP at all
is(status('garbage', 'alice', 'alice-pw'), $temp, 'bytes that are no LDAP message: temporary failure');
ok(log_lines($t, qr/\[error\].*auth-garbage/), 'logged');

# two entries for one user: never the first of them
is(status('two', 'alice', 'alice-pw'), $temp, 'two entries: temporary failure');
is(status('two', 'alice', 'wrong'), $temp, 'two entries, a wrong password: temporary failure');
ok(log_lines($t, qr/\[error\].*more than one entry for user \S*alice/), 'logged: more than one entry');
unlike($t->read_file('ldap-two.log'), qr/bind uid=alice/, 'no bind as either entry');

# a directory that takes any bind: the empty password never reaches it
isnt(status('emptybind', 'alice', ''), 'OK', 'an empty password is not OK');
unlike($t->read_file('ldap-emptybind.log'), qr/bind uid=alice/, 'an empty password is not bound with');
is(status('emptybind', 'alice', 'anything'), 'OK', 'a password the directory takes is OK (it decides)');
like($t->read_file('ldap-emptybind.log'), qr/bind uid=alice,\Q$base\E len=8/, 'bound as the entry with that password');

# nothing lost: the same worker, a panic caught (not a crash), the other stores answer
is(join(',', worker_pids(master_pid($t))), $workers, 'the same worker pids after the bad answers');
is(log_lines($t, qr/exited on signal|worker process \d+ exited/), 0, 'no worker exited');
is(log_lines($t, qr/panic caught/), 0, 'the panics were caught by the LDAP store, not by the request guard');
like(imap_login('local', 'local-pw', 8153), qr/^a01 OK/, 'a passwd-file login through the proxy still works');
is(status('baddn', 'alice', 'alice-pw'), $temp, 'the bad directory still gets a temporary failure');

$t->stop();
is(log_lines($t, qr/\[alert\]|\[emerg\]/), 0, 'no alert in the error log');

###############################################################################

# A fake LDAP server on $port: each search is answered according to $kind; binds are logged
# (DN and password length) and answered "success"; the log is one line per operation.
sub fake_ldap {
	my ($kind, $port, $log) = @_;
	my $server = IO::Socket::INET->new(Proto => 'tcp', LocalAddr => "127.0.0.1:$port",
		Listen => 16, Reuse => 1) or die "fake ldap on $port: $!\n";
	local $SIG{PIPE} = 'IGNORE';
	open my $lf, '>>', $log or die "$log: $!\n";
	$lf->autoflush(1);
	local $SIG{CHLD} = 'IGNORE';
	while (1) {
		my $c = $server->accept() or next;
		# a connection each (the module keeps its search connection open while it binds on
		# another)
		if (fork()) {
			close $c;
			next;
		}
		close $server;
		$c->autoflush(1);
		while (my $msg = read_message($c)) {
			my ($id, $op, $body) = @$msg;
			if ($op == 0x60) {
				# BindRequest: version, name, [0] simple password
				my ($ver, $rest) = take_tlv($body);
				my ($dn, $rest2) = take_tlv($rest);
				my ($pw) = take_tlv($rest2);
				print $lf "bind $dn->[1] len=" . length($pw->[1]) . "\n";
				print $c message($id, tlv(0x61, result(0)));
			} elsif ($op == 0x63) {
				my $filter = $body =~ /uid\x04.([a-z]+)/s ? $1 : '?';
				print $lf "search uid=$filter\n";
				print $c search_reply($kind, $id, $filter);
				last if $kind eq 'garbage';
			} elsif ($op == 0x42) {
				last;
			} else {
				print $lf sprintf("op 0x%02x\n", $op);
				last;
			}
		}
		close $c;
		POSIX::_exit(0);
	}
}

sub search_reply {
	my ($kind, $id, $user) = @_;
	my $dn = "uid=$user,$base";
	my $done = message($id, tlv(0x65, result(0)));
	return "\x{ff}\x{fe} HTTP/1.0 200 OK\r\n\r\n\x{00}\x{00}" if $kind eq 'garbage';
	return message($id, tlv(0x64, tlv(0x04, "\xff\xfe$user") . tlv(0x30, ''))) . $done
		if $kind eq 'baddn';
	return message($id, tlv(0x64, tlv(0x04, $dn) . tlv(0x04, 'not a sequence'))) . $done
		if $kind eq 'badattrs';
	return message($id, tlv(0x64, tlv(0x04, $dn) . tlv(0x30, '')))
		. message($id, tlv(0x64, tlv(0x04, "uid=$user,ou=other,dc=example,dc=org") . tlv(0x30, '')))
		. $done if $kind eq 'two';
	return message($id, tlv(0x64, tlv(0x04, $dn) . tlv(0x30, ''))) . $done;
}

# LDAPResult: resultCode, matchedDN, diagnosticMessage
sub result { return tlv(0x0a, chr($_[0])) . tlv(0x04, '') . tlv(0x04, ''); }

sub message {
	my ($id, $op) = @_;
	return tlv(0x30, tlv(0x02, $id) . $op);
}

sub tlv {
	my ($tag, $v) = @_;
	my $n = length $v;
	my $len = $n < 0x80 ? chr($n) : $n < 0x100 ? "\x81" . chr($n) : "\x82" . pack('n', $n);
	return chr($tag) . $len . $v;
}

# ([tag, value], rest) of the first TLV of $s
sub take_tlv {
	my ($s) = @_;
	return ([0, ''], '') if length($s) < 2;
	my $tag = ord substr($s, 0, 1);
	my $n = ord substr($s, 1, 1);
	my $at = 2;
	if ($n & 0x80) {
		my $k = $n & 0x7f;
		$n = 0;
		$n = $n * 256 + ord(substr($s, $at++, 1)) for 1 .. $k;
	}
	return ([$tag, substr($s, $at, $n)], substr($s, $at + $n));
}

# one LDAPMessage from $c: [message id (its content octets), op tag, op content], or undef
sub read_message {
	my ($c) = @_;
	my $head = '';
	$c->sysread($head, 2, length $head) or return undef while length($head) < 2;
	my $n = ord substr($head, 1, 1);
	if ($n & 0x80) {
		my $k = $n & 0x7f;
		my $more = '';
		$c->sysread($more, $k - length $more, length $more) or return undef while length($more) < $k;
		$n = 0;
		$n = $n * 256 + ord($_) for split //, $more;
	}
	my $body = '';
	$c->sysread($body, $n - length $body, length $body) or return undef while length($body) < $n;
	my ($id, $rest) = take_tlv($body);
	my ($op) = take_tlv($rest);
	return [$id->[1], $op->[0], $op->[1]];
}

###############################################################################
