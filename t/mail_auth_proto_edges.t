#!/usr/bin/perl

# Tests for ngx-mail-auth: protocol and limiter edges found by a review.
# 1. A cheap-scheme account ({SSHA}) in a store whose costliest hash is bcrypt: a wrong password
#    needs the bcrypt template as timing padding, on the pool. While the worker's verification
#    queue has no place (kept busy by unknown users, each verified against the template), its
#    password is not checked at all: the temporary failure an unknown user gets, right password
#    or wrong, given back. (First, the answer was a temporary failure for a wrong password and
#    OK for the right one, uncounted: an attacker who kept the queue busy guessed without limit.
#    Then the wrong ones were counted, while an unknown name's were not: after the flood the
#    cheap account was banned and the unknown name was not, which told them apart.)
# 2. The same for the cheap app passwords of a bcrypt account, tried on the event loop before
#    the main password's bcrypt, which finds no place.
# 3. mail_auth_limit with user= and no ip=: a client group that logged in as alice (trusted,
#    so that others' failures do not lock it out) has no budget of its own, so trust must not
#    take it off alice's counter. (Before: from the owner's address, a NAT or a /64 shared with
#    a guesser, 50 wrong passwords were all checked under user=3/m.)

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;
use IO::Select;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
workers_can_read($t);
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'htpasswd not installed') unless have_tool('htpasswd');

my $d = $t->testdir();
system('htpasswd', '-cbB', '-C', '13', "$d/users", 'slow', 'slow-password') == 0 or die;
system('htpasswd', '-bs', "$d/users", 'cheap', 'cheap-password') == 0 or die;
system('htpasswd', '-bB', '-C', '10', "$d/users", 'apps', 'main-password') == 0 or die;
my $app = `htpasswd -bns apps app-password`;
$app =~ s/^apps:(\S+)\s*$/apps:phone:$1\n/ or die "htpasswd -s: $app\n";
$t->write_file('apps', $app);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:1143;
    mail_auth_fail_wait 0;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /busy {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_verify_concurrency 1 queue=1;
            mail_auth_limit zone=busy:1m user=3/m;
        }

        location = /apps {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_app_passwords %%TESTDIR%%/apps;
            mail_auth_verify_concurrency 1 queue=1;
            mail_auth_limit zone=apps:1m user=3/m;
        }

        location = /user-only {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_limit zone=useronly:1m user=3/m;
        }
    }
}

EOF

$t->run()->plan(8);

###############################################################################

my $TEMP = '[UNAVAILABLE] Temporary server problem, try again later';

sub request {
	my ($uri, $user, $pass, $ip) = @_;
	return "GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: $user\r\n"
		. "Auth-Pass: $pass\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
		. "Client-IP: $ip\r\n\r\n";
}

sub start { return auth_start(@_); }

sub finish { return auth_finish($_[0], 60); }

# 1. the queue kept busy by unknown users (each verified against the bcrypt template: one runs,
# one waits), meanwhile guesses for the {SSHA} account "cheap", its right password among them,
# and as many for the unknown name "ghost"

sub flood {
	my ($uri, $net, $user, $right) = @_;
	my @busy = map { start(request($uri, "nobody$_", 'x', "127.0.$net.$_")) } 1 .. 2;
	select undef, undef, undef, 0.2;
	my @answers;
	for my $i (1 .. 6) {
		push @answers, finish(start(request($uri, $user, $i == 3 ? $right : "guess-$i", '127.0.2.1')));
		push @answers, finish(start(request($uri, 'ghost', "guess-$i", '127.0.2.1')));
	}
	finish($_) for @busy;
	return @answers;
}

my @answers = flood('/busy', 1, 'cheap', 'cheap-password');
is(join(',', grep { $_ ne $TEMP } @answers), '',
	'queue busy: every answer the temporary failure, the right password\'s too (no oracle)');
my $log = $t->read_file('error.log');
is(scalar(() = $log =~ /user="(?:cheap|ghost)" client=127\.0\.2\.1 .*result=(?!overloaded)/g), 0,
	'queue busy: no password checked');
is(join(',', map { finish(start(request('/busy', $_->[0], $_->[1], '127.0.2.9'))) } ['cheap', 'cheap-password'], ['ghost', 'x']),
	"OK,[AUTHENTICATIONFAILED] Invalid login or password", 'after: neither banned (nothing counted), the owner logs in');

# 2. app passwords ({SHA}, tried first) of a bcrypt account while the queue is busy

@answers = flood('/apps', 3, 'apps', 'app-password');
is(join(',', grep { $_ ne $TEMP } @answers), '', 'app passwords, queue busy: every answer the temporary failure');
is(finish(start(request('/apps', 'apps', 'app-password', '127.0.2.9'))), 'OK', 'app passwords: after, the app password logs in');

# 3. user= only: guesses from the address the owner logged in from

is(finish(start(request('/user-only', 'cheap', 'cheap-password', '127.0.5.1'))), 'OK', 'user only: owner logged in');
finish(start(request('/user-only', 'cheap', "guess-$_", '127.0.5.1'))) for 1 .. 10;
$log = $t->read_file('error.log');
my $checked = () = $log =~ /user="cheap" client=127\.0\.5\.1 .*result=invalid/g;
is($checked, 3, 'user only: 10 guesses from the owner\'s address, 3 checked');
isnt(finish(start(request('/user-only', 'cheap', 'cheap-password', '127.0.5.1'))), 'OK',
	'user only: the account is banned for that address too');

###############################################################################
