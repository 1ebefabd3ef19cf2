#!/usr/bin/perl

# Tests for ngx-mail-auth: a mail_auth location among nginx's other content handlers and its
# error pages (found by a read-only review of the FFI layer):
#   1. "mail_auth" beside another content handler (proxy_pass, in either order, or in an "if"
#      block of the location): nginx -t refuses it (it was accepted, and whichever came last
#      answered: the upstream's answer went to nginx mail as the module's);
#   2. an "error_page 502 @local" without "=" into a mail_auth location: one decision, the
#      module's, sent with its status (nginx kept the 502, the status filter added a temporary
#      failure: two Auth-Status headers, two decision lines);
#   3. an "error_page" for 5xx in effect (the stock nginx.conf's, at server level): the module's
#      own temporary failure (a foreign Host) is still answered with the auth_http headers, not
#      the page (nginx mail then closed the session), and nginx -t warns about the 5xx that are
#      not the module's.

###############################################################################

use warnings;
use strict;

use Test::More;
use IO::Socket::INET;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx qw/ :DEFAULT http /;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy rewrite/);
workers_can_read($t);

$t->write_file('users', "carol:{PLAIN}carol-pw\ndave:{PLAIN}dave-pw\n");

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # as nginx's stock nginx.conf
    server {
        listen       127.0.0.1:8080;
        server_name  localhost;
        error_page   500 502 503 504  /50x.html;

        location = /50x.html {
            return 200 "page";
        }

        location = /auth {
            # before
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
            # after
        }
    }

    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        # a legacy auth_http server first, the module when it is down
        location = /legacy {
            proxy_pass http://127.0.0.1:%%PORT_8182%%;
            error_page 502 503 504 @local;
        }

        location @local {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }
    }
}

EOF

$t->run()->plan(13);

my $mail = "Auth-Method: plain\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\n"
	. "Client-IP: 192.0.2.7\r\nClient-Host: [UNAVAILABLE]\r\n";

sub decisions {
	my ($log, $user) = @_;
	return scalar grep { /mail_auth: user="$user" .*result=/ } split /\n/, $log;
}

###############################################################################

# 1. another content handler in a mail_auth location: refused whatever the order

my ($rc, $out) = nginx_t_with($t, qr/# after/, 'proxy_pass http://127.0.0.1:1;');
ok($rc != 0 && $out =~ /\[emerg\].*cannot share a location with another content handler/,
	'nginx -t: mail_auth then proxy_pass refused') or diag($out);
($rc, $out) = nginx_t_with($t, qr/# before/, 'proxy_pass http://127.0.0.1:1;');
ok($rc != 0 && $out =~ /\[emerg\].*cannot share a location with another content handler/,
	'nginx -t: proxy_pass then mail_auth refused') or diag($out);
($rc, $out) = nginx_t_with($t, qr/# after/, 'if ($arg_x) { proxy_pass http://127.0.0.1:1; }');
ok($rc != 0 && $out =~ /\[emerg\].*cannot share a location with another content handler/,
	'nginx -t: proxy_pass in an if block of a mail_auth location refused') or diag($out);
($rc, $out) = nginx_t_with($t, qr/# after/, 'if ($arg_x) { return 403; }');
is($rc, 0, 'nginx -t: an if block without a content handler accepted') or diag($out);

# 2. error_page without "=" into a mail_auth location: the module's decision, once

my $r = http("GET /legacy HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: carol\r\nAuth-Pass: carol-pw\r\n\r\n",
	socket => IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8081)));
like($r, qr/^HTTP\/1\.[01] 200/, 'error_page 502 @local: the module\'s status') or diag($r);
is(() = $r =~ /^Auth-Status:/mg, 1, 'error_page 502 @local: one Auth-Status') or diag($r);
like($r, qr/^Auth-Status: OK\r$/m, 'error_page 502 @local: ... OK');
my $log = $t->read_file('error.log');
is(decisions($log, 'carol'), 1, 'error_page 502 @local: one decision line');

# 3. an error_page for 5xx in effect: the module's own temporary failure is still its answer

$r = http("GET /auth HTTP/1.0\r\nHost: evil.example\r\n$mail"
	. "Auth-User: dave\r\nAuth-Pass: dave-pw\r\n\r\n");
like($r, qr/^Auth-Status: .*Temporary server problem, try again later\r$/m,
	'error_page 5xx, a foreign Host: a temporary failure') or diag($r);
like($r, qr/^Auth-Wait: \d+\r$/m, 'error_page 5xx, a foreign Host: ... with Auth-Wait');
unlike($r, qr/page/, 'error_page 5xx, a foreign Host: not the error page');
$r = http("GET /auth HTTP/1.0\r\nHost: localhost\r\n$mail"
	. "Auth-User: dave\r\nAuth-Pass: dave-pw\r\n\r\n");
like($r, qr/^Auth-Status: OK\r$/m, 'error_page 5xx: the right password OK');

# nginx -t warns: a 5xx the module does not make (limit_req, an auth_request upstream down)
# goes to the page
($rc, $out) = nginx_t_with($t, qr/# after/, '# after');
ok($rc == 0 && $out =~ /\[warn\].*"error_page" for 5xx/,
	'nginx -t: an error_page for 5xx in a mail_auth location warned about') or diag($out);

###############################################################################
