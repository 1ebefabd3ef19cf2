#!/usr/bin/perl

# Tests for ngx-mail-auth: a Basic-bridge location (mail_auth_basic_header on + auth_basic) with
# guesses whose password ends in a NUL byte (AUTH PLAIN carries one; nginx mail sends it as %00).
# nginx's auth_basic reads the password up to the NUL, the module refuses such a request: it is
# refused before the access phase (no password checked), so such guesses neither go unlimited
# nor get around a ban or the transport policy. Through the real nginx with two workers.

###############################################################################

use warnings;
use strict;

use Test::More;
use JSON::PP qw/ decode_json /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'curl not installed') unless have_tool('curl');

my $d = $t->testdir();
$t->write_file('users', "alice:{PLAIN}alice-pw\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_limit zone=ops:1m ip=2/m ban=120s;

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }

        location = /bans {
            allow 127.0.0.1;
            deny all;
            mail_auth_limit_bans;
        }
    }

    server {
        listen       127.0.0.1:8081 reuseport;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_basic_header on;
            auth_basic "mail";
            auth_basic_user_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_limit zone=bridge:1m ip=2/m ban=120s;
            mail_auth_require_tls imap;
            mail_auth_listener mx auth=off;
            mail_auth_fail_wait 0;
        }
    }
}

EOF

$t->run()->plan(3);

###############################################################################

# The Basic bridge, with a password ending in a NUL byte (AUTH PLAIN carries one; nginx mail
# sends it as %00): auth_basic's crypt reads the password up to the NUL ("alice-pw%00" passes
# it), the module refuses such a request. Before: the precheck left it to auth_basic, which
# checked every such guess (never counted: 5 of 5 with ip=2/m), the ban and the TLS policy
# bypassed; now refused before auth_basic, like the content handler refuses it.

sub bridge {
	my ($ip, $pass, %h) = @_;
	%h = ('Auth-Method' => 'plain', 'Auth-Protocol' => 'imap', 'Auth-User' => 'alice',
		'Auth-Pass' => $pass, 'Auth-Login-Attempt' => 1, 'Client-IP' => $ip, %h);
	my $req = "GET /auth HTTP/1.0\r\nHost: localhost\r\n";
	$req .= "$_: $h{$_}\r\n" for sort keys %h;
	my $s = IO::Socket::INET->new(Proto => 'tcp', PeerAddr => '127.0.0.1:' . port(8081))
		or return "cannot connect: $!";
	my $r = http("$req\r\n", socket => $s) // '';
	return $1 if $r =~ /^Auth-Status: (.*?)\r?$/m;
	return "no Auth-Status in: " . ($r =~ /^(HTTP\S* \d+)/ ? $1 : $r);
}

sub mismatches {
	return scalar grep { /user "alice": password mismatch/ } split /\n/, $t->read_file('error.log');
}

my @tls = ('Auth-SSL' => 'on');
my $before = mismatches();
bridge('192.0.2.30', "nul-guess-$_%00", @tls) for 1 .. 5;
is(mismatches() - $before, 0, 'bridge: guesses ending in NUL: none checked by auth_basic (before: every one, uncounted)');
my $right = bridge('192.0.2.30', 'alice-pw%00', @tls);
is($right, bridge('192.0.2.30', 'nul-guess-9%00', @tls), 'bridge: banned, the right and a wrong password get one answer');
is(bridge('192.0.2.31', 'alice-pw%00'), bridge('192.0.2.31', 'nul-guess%00'),
	'bridge: without TLS, a right and a wrong password get one answer');


# (the subs above hold $t: let Test::Nginx's checks run now, not in global destruction)
undef $t;

###############################################################################
