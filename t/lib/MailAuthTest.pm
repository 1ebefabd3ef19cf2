package MailAuthTest;

# Helpers shared by the t/*.t tests of ngx-mail-auth (written for this project).

use warnings;
use strict;

use base qw/ Exporter /;
our @EXPORT = qw/ have_tool make_hash real_client sasl_client auth_http wait_for
	workers_can_read run_tool nginx_t_with run_example stop_process imap_login
	auth_start auth_finish /;

use FindBin;
use POSIX qw//;
use Test::Nginx qw/ http /;

sub have_tool {
	my ($tool) = @_;
	return scalar grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

# A stored password made by a real tool:
#   htpasswd-B (cost 5), htpasswd-m (apr1), htpasswd-s ({SHA}), openssl-6, openssl-5,
#   openssl-1, openssl-apr1, doveadm-SCHEME (e.g. doveadm-SSHA512)
# Returns undef when the tool is missing.
sub make_hash {
	my ($kind, $password) = @_;
	my @cmd;
	if ($kind =~ /^htpasswd-(B|m|s)$/) {
		return undef unless have_tool('htpasswd');
		@cmd = ('htpasswd', '-nb' . $1, ($1 eq 'B' ? ('-C', '5') : ()), 'u', $password);
	} elsif ($kind =~ /^openssl-(\w+)$/) {
		return undef unless have_tool('openssl');
		@cmd = ('openssl', 'passwd', "-$1", $password);
	} elsif ($kind =~ /^doveadm-([\w.-]+)$/) {
		return undef unless have_tool('doveadm');
		@cmd = ('doveadm', '-o', 'stats_writer_socket_path=', 'pw', '-s', $1, '-p', $password);
	} else {
		die "unknown hash kind $kind\n";
	}
	open my $fh, '-|', @cmd or return undef;
	local $/;
	my $out = <$fh>;
	close $fh;
	return undef if $? != 0 or !defined $out;
	$out =~ s/\s+\z//;
	$out =~ s/^u:// if $kind =~ /^htpasswd/;
	return $out;
}

# Runs a real client (t/lib/mail_client.py: imaplib/poplib/smtplib). Returns (exit code, output).
sub real_client {
	return python_client('mail_client.py', @_);
}

# t/lib/sasl_client.py: APOP, CRAM-MD5, EXTERNAL, SMTP sending, IMAP FETCH / POP3 RETR, TLS.
sub sasl_client {
	return python_client('sasl_client.py', @_);
}

sub python_client {
	my ($script, @args) = @_;
	open my $fh, '-|', 'python3', "$FindBin::Bin/lib/$script", @args
		or return (2, "cannot run python3: $!");
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

# Runs a command without a shell (arguments as they are: passwords with quotes or spaces),
# stdin from /dev/null. Returns (exit code, stdout and stderr together); 127: not run.
sub run_tool {
	my (@cmd) = @_;
	my $pid = open(my $fh, '-|');
	return (127, "fork: $!") unless defined $pid;
	if ($pid == 0) {
		open STDERR, '>&', \*STDOUT;
		open STDIN, '<', '/dev/null';
		{ no warnings qw/ exec /; exec { $cmd[0] } @cmd; }
		syswrite STDOUT, "cannot run $cmd[0]: $!\n";
		POSIX::_exit(127);    # no END blocks, no destructors in the child
	}
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

# A raw auth_http request to the module, as nginx mail would send it. %h: header => value.
sub auth_http {
	my ($uri, %h) = @_;
	my $req = "GET $uri HTTP/1.0\r\nHost: localhost\r\n";
	$req .= "$_: $h{$_}\r\n" for sort keys %h;
	return http($req . "\r\n");
}

# An auth_http request $req sent on a connection of its own to the test's http port (8080),
# its answer not read yet: many can be in flight at once.
sub auth_start {
	my ($req) = @_;
	require IO::Socket::INET;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . Test::Nginx::port(8080)) or die "$!\n";
	$s->print($req);
	return $s;
}

# The Auth-Status of the answer on $s (from auth_start), 'none' if none came within $secs.
sub auth_finish {
	my ($s, $secs) = @_;
	require IO::Select;
	local $/;
	my $r = IO::Select->new($s)->can_read($secs) ? <$s> // '' : '';
	close $s;
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

# One IMAP LOGIN through nginx mail's listener on $port (default 8143): the tagged answer line.
sub imap_login {
	my ($user, $pass, $port) = @_;
	require Test::Nginx::IMAP;
	my $s = Test::Nginx::IMAP->new(PeerAddr => '127.0.0.1:' . Test::Nginx::port($port // 8143));
	$s->read();
	$s->send(qq{a01 LOGIN "$user" "$pass"});
	return $s->read() // '';
}

# nginx workers run as "nobody" when the tests run as root; the official harness makes the test
# directory 0700. Make it traversable (files are written 0644 under the usual umask).
sub workers_can_read {
	my ($t) = @_;
	chmod 0755, $t->testdir();
	return $t;
}

# Polls $check->() every 0.1 s for up to $secs; returns its last value.
sub wait_for {
	my ($secs, $check) = @_;
	my $v;
	for (1 .. $secs * 10) {
		$v = $check->();
		return $v if $v;
		select undef, undef, undef, 0.1;
	}
	return $v;
}

# SIGSTOP to $pid, returned once every thread of it is seen stopped (state T in /proc): a
# test that then expects the process not to answer does not race the signal. False if it
# is not stopped within 5 s.
sub stop_process {
	my ($pid) = @_;
	kill 'STOP', $pid or return 0;
	return 1 unless -d "/proc/$pid/task";
	return wait_for(5, sub {
		my @states;
		for my $task (glob("/proc/$pid/task/*")) {
			open my $fh, '<', "$task/stat" or next;
			push @states, (<$fh> // '') =~ /\)\s+(\S)/;
		}
		@states && !grep { $_ ne 'T' && $_ ne 't' } @states;
	});
}

# nginx -t on the test's nginx.conf with the first match of $re replaced by $with (the
# configuration as a test would break it): (exit code, what nginx printed).
sub nginx_t_with {
	my ($t, $re, $with) = @_;
	my $d = $t->testdir();
	(my $c = $t->read_file('nginx.conf')) =~ s/$re/$with/ or die "no match for $re\n";
	$t->write_file('bad.conf', $c);
	my $out = `$Test::Nginx::NGINX -t -p $d/ -c $d/bad.conf -e $d/error-t.log 2>&1`;
	return ($? >> 8, $out);
}

# The example nginx-conf/$name as it is, started by a Test::Nginx of its own: its pid and
# error_log lines left to the harness, load_module replaced by the test's, loopback ports moved
# to free ones; $edit->(\$conf) points it at the test's servers; %o: files => {name => text}
# written first, users => {user => password} of the fake IMAP backend it proxies to (port 11143,
# its log imap.log). Returns the Test::Nginx (the caller stops it and its daemons).
sub run_example {
	my ($name, $edit, %o) = @_;
	require MailAuthBackend;
	open my $ex, '<', "$FindBin::Bin/../nginx-conf/$name" or die "nginx-conf/$name: $!";
	my $conf = do { local $/; <$ex> };
	close $ex;
	$conf =~ s/^\s*(pid|error_log)\s[^;]*;\s*$//mg;
	$conf =~ s/^\s*load_module\s+[^;]*ngx_http_mail_auth_module\.so;/%%TEST_GLOBALS%%/m or die "no load_module";
	$conf = "daemon off;\n" . $conf;
	$conf =~ s/127\.0\.0\.1:(\d+)/127.0.0.1:%%PORT_$1%%/g;
	$edit->(\$conf) if $edit;
	my $e = Test::Nginx->new();
	workers_can_read($e);
	$e->write_file($_, $o{files}{$_}) for sort keys %{$o{files} // {}};
	$e->write_file_expand('nginx.conf', $conf);
	$e->run_daemon(\&MailAuthBackend::imap, Test::Nginx::port(11143), $e->testdir() . '/imap.log',
		%{$o{users} // {}});
	$e->run();
	$e->waitforsocket('127.0.0.1:' . Test::Nginx::port(11143));
	return $e;
}

1;
