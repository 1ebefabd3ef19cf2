#!/usr/bin/perl

# Tests for ngx-mail-auth: a directory that hangs does not take the thread pool from the other
# logins. Its lookups wait on the network on pool threads; however many logins ask for it (here
# more than nginx's default pool has threads), at most mail_auth_lookup_concurrency of them hold
# a thread, so the costly verifications of other stores (a bcrypt passwd-file in another
# location) are answered at once; the others wait on the event loop, and each hung login still
# gets its temporary failure when its query_timeout ends; beyond the queue, at once. The same
# for the JSON API's lookups (Dovecot's userdb) of the hung directory.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw/ time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx qw/ :DEFAULT http /;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

my $bcrypt = make_hash('htpasswd-B', 'local-pw');
$t->write_file('users', "local:$bcrypt\n");

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

        # a directory that accepts connections and never answers
        location = /hung {
            mail_auth;
            mail_auth_ldap ldap://127.0.0.1:%%PORT_8389%% base=dc=example,dc=org
                           connect_timeout=2s query_timeout=4s pool=1;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        # the JSON API (Dovecot's userdb lookups) of the same hung directory: bounded alike
        # (mail_auth_lookup_concurrency default: 8)
        location = /json-hung {
            mail_auth_json;
            mail_auth_ldap ldap://127.0.0.1:%%PORT_8389%% base=dc=example,dc=org
                           connect_timeout=2s query_timeout=4s pool=1;
        }

        location = /hung-small {
            mail_auth;
            mail_auth_ldap ldap://127.0.0.1:%%PORT_8389%% base=dc=example,dc=org
                           connect_timeout=2s query_timeout=2s pool=1;
            mail_auth_lookup_concurrency 1 queue=1;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        location = /local {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }
    }
}

EOF

# reads until nginx closes the connection, answers nothing
$t->run_daemon(\&MailAuthBackend::serve, port(8389), sub { my ($c) = @_; 1 while <$c>; });
$t->run()->plan(11);
$t->waitforsocket('127.0.0.1:' . port(8389));

my $mail = "Auth-Method: plain\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
	. "Client-IP: 192.0.2.7\r\nClient-Host: [UNAVAILABLE]\r\n";

sub request {
	my ($uri, $user, $pass) = @_;
	return "GET $uri HTTP/1.0\r\nHost: localhost\r\n$mail"
		. "Auth-User: $user\r\nAuth-Pass: $pass\r\n\r\n";
}

###############################################################################

# more logins for the hung directory than nginx's default pool has threads (32), left waiting

my @hung = map {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or die "connect: $!\n";
	$s->autoflush(1);
	print $s request('/hung', "user$_", 'pw');
	$s;
} 1 .. 40;
select undef, undef, undef, 0.5;

# a bcrypt login of another location meanwhile

my $start = time();
my $r = http(request('/local', 'local', 'local-pw'));
my $took = time() - $start;
like($r, qr/Auth-Status: OK/, 'a bcrypt login of another location: answered OK');
cmp_ok($took, '<', 1.5, 'at once, not after the hung lookups time out') or diag(sprintf('took %.1f s', $took));

# the hung directory's logins: each a temporary failure, none OK, once its timeout is over

my ($temp, $other) = (0, 0);
for my $s (@hung) {
	IO::Select->new($s)->can_read(40);
	my $a = join '', <$s>;
	if ($a =~ /Auth-Status: \[UNAVAILABLE\] Temporary server problem/) { $temp++ } else { $other++; diag("answered: $a") }
	close $s;
}
is($other, 0, 'no hung login answered anything but a temporary failure');
is($temp, 40, 'every hung login answered');

# a location allowing 1 lookup and 1 waiting: the third login at once is refused at once

my @small = map {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or die "connect: $!\n";
	$s->autoflush(1);
	print $s request('/hung-small', "small$_", 'pw');
	$s;
} 1 .. 3;
$start = time();
my @ready = IO::Select->new(@small)->can_read(1.5);
is(scalar @ready, 1, 'beyond the queue: one answered at once');
like(join('', map { <$_> } @ready), qr/Auth-Status: \[UNAVAILABLE\] Temporary server problem/, '... a temporary failure');
like($t->read_file('error.log'), qr/result=overloaded reason="too many lookups waiting in this worker/,
	'... logged as overloaded');
IO::Select->new($_)->can_read(10) and close $_ for @small;

# more JSON API lookups for the hung directory than nginx's default pool has threads (32), and a
# bcrypt login of another location meanwhile

my @json = map {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or die "connect: $!\n";
	$s->autoflush(1);
	my $b = qq({"username":"user$_","service":"lmtp"});
	print $s "POST /json-hung?mode=no-auth HTTP/1.0\r\nHost: localhost\r\n"
		. "Content-Type: application/json\r\nContent-Length: " . length($b) . "\r\n\r\n$b";
	$s;
} 1 .. 40;
select undef, undef, undef, 0.5;
$start = time();
$r = http(request('/local', 'local', 'local-pw'));
$took = time() - $start;
like($r, qr/Auth-Status: OK/, 'JSON API: a bcrypt login of another location answered OK');
cmp_ok($took, '<', 1.5, 'JSON API: at once, not after the hung lookups time out') or diag(sprintf('took %.1f s', $took));
my ($json_ok, $json_temp) = (0, 0);
for my $s (@json) {
	IO::Select->new($s)->can_read(60);
	my $ans = join('', <$s>);
	$json_ok++ if $ans =~ /^HTTP\/1\.[01] 200 /;
	$json_temp++ if $ans =~ /^HTTP\/1\.[01] 503 / && $ans =~ /Temporary server problem/;
	close $s;
}
is($json_ok, 0, 'JSON API: no hung lookup answered 200');
is($json_temp, 40, 'JSON API: every hung lookup a temporary failure (503)');

###############################################################################
