#!/usr/bin/perl

# Tests for ngx-mail-auth: a device with one stale password opening several connections at once
# (mail clients open a few IMAP connections in parallel) is counted once by mail_auth_limit, as
# its repeats one after the other are, through the real nginx with two workers.
#   1. 6 simultaneous IMAP LOGINs with the same wrong password for alice from 127.0.0.2 (bcrypt
#      cost 12: the verifications overlap), with user=3/m and no ip= limit: the burst counts
#      once, alice is not banned, and her right password from 127.0.0.3 logs in
#   2. counted once, not zero times: two other wrong passwords then bring alice's failures to
#      3 (the ban); distinct passwords in flight at once each count (t/mail_auth_attacks.t)

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ sleep /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http mail imap/);
workers_can_read($t);
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'htpasswd (apache2-utils) not installed') unless have_tool('htpasswd');
plan(skip_all => 'python3 with imaplib not installed')
	unless system('python3 -c "import imaplib, threading" 2>/dev/null') == 0;

my $d = $t->testdir();
my ($rc, $out) = run_tool('htpasswd', '-cbB', '-C', '12', "$d/users", 'alice', 'alice-pw');
die "htpasswd: $out" if $rc != 0;
chmod 0644, "$d/users";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:%%PORT_8144%%;
    mail_auth_fail_wait 0s;
    mail_auth_log_level info;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /imap {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_limit zone=burst:1m user=3/m;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/imap;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run()->plan(6);

###############################################################################

my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';

sub log_size { return length $_[0]->read_file('error.log'); }

# The decision lines for client $ip since offset $from: their results.
sub results {
	my ($t, $from, $ip) = @_;
	return map { / result=(\S+) / ? $1 : 'none' }
		grep { / mail_auth: user="[^"]*" client=\Q$ip\E / }
		split /\n/, substr($t->read_file('error.log'), $from);
}

# One login as nginx mail asks for it; returns "STATUS RESULT": the Auth-Status and the result
# its decision line logged.
sub login {
	my ($t, $user, $pass, $ip) = @_;
	my $from = log_size($t);
	my $r = auth_http('/imap', 'Auth-Method' => 'plain', 'Auth-User' => $user, 'Auth-Pass' => $pass,
		'Auth-Protocol' => 'imap', 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip) // '';
	my $status = $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
	$status = 'invalid' if $status eq $INVALID;
	my $result = wait_for(2, sub { my @r = results($t, $from, $ip); @r ? \@r : undef }) // [];
	return "$status " . ($result->[0] // 'no-line');
}

###############################################################################

# 1. the burst: 6 connections, then all LOGINs at once; refused ones carry an Auth-Wait that
# nginx sleeps before answering: the clients wait 5 s at most, the decisions are read in the log
my $from = log_size($t);
{
	local $ENV{IMAP_BURST_SOURCE} = '127.0.0.2';
	local $ENV{IMAP_BURST_SAME} = '1';
	open my $burst, '-|', 'python3', "$FindBin::Bin/lib/imap_burst.py",
		'127.0.0.1', port(8143), 6, 'alice', 'stale-pw', 5
		or die "imap_burst.py: $!\n";
	my $connected = <$burst> // '';
	my $result = join '', <$burst>;
	close $burst;
	is($connected, "connected 6\n", 'burst: 6 clients connected');
	like($result, qr/"ok": 0,/, 'burst: the wrong password logged in nowhere') or diag($result);
}
my @res;
wait_for(15, sub { @res = results($t, $from, '127.0.0.2'); @res >= 6 });
my %n;
$n{$_}++ for @res;
my $summary = join(', ', map { "$_: $n{$_}" } sort keys %n) || 'nothing';
note("burst decisions: $summary");
ok(@res == 6 && ($n{invalid} // 0) >= 1 && ($n{invalid} // 0) + ($n{'rate-limited'} // 0) == 6,
	"burst: 6 decisions, at most the limit verified ($summary)");

is(login($t, 'alice', 'alice-pw', '127.0.0.3'), 'OK ok',
	'the owner logs in from another client after the burst (it counted once: no ban)');

# 2. counted once: 2 more failures reach the limit of 3
is(join(', ', map { login($t, 'alice', "guess-$_", '127.0.0.4') } 1 .. 2),
	'invalid invalid, invalid invalid', 'two more wrong passwords are checked (1 + 2 of 3)');
is(login($t, 'alice', 'guess-3', '127.0.0.4'), 'invalid rate-limited',
	'the burst counted once, not zero times: banned at its third failure');

###############################################################################
