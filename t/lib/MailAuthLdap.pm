package MailAuthLdap;

# A throwaway OpenLDAP slapd for the LDAP tests: where Debian (or another system) keeps slapd,
# its schemas and its mdb backend; the head of a slapd.conf; start and stop. Every slapd started
# here is stopped when the test process ends, whatever happens (the test's exit code kept).

use warnings;
use strict;

use Exporter qw/ import /;
use IO::Socket::INET;
use Test::More;

use MailAuthTest;

our @EXPORT = qw/ ldap_skip_unless_installed slapd_conf_head slapd_run slapd_kill /;

my ($slapd) = grep { -x $_ } qw{ /usr/sbin/slapd /usr/local/libexec/slapd };
my ($schemas) = grep { -f "$_/core.schema" } qw{ /etc/ldap/schema /etc/openldap/schema };
my ($modules) = grep { -f "$_/back_mdb.so" || -f "$_/back_mdb.la" } qw{ /usr/lib/ldap /usr/lib/openldap /usr/lib64/openldap };

# Skips the whole test when slapd, its tools or its schemas are missing.
sub ldap_skip_unless_installed {
	plan(skip_all => 'slapd not installed (slapd package)') unless $slapd;
	plan(skip_all => 'slapadd/slappasswd not installed') unless have_tool('slapadd') && have_tool('slappasswd');
	plan(skip_all => 'OpenLDAP schema files not found') unless $schemas;
}

# The start of a slapd.conf: the schemas named (core, cosine, inetorgperson, ...) and the pid
# file; the mdb backend's module where it is one.
sub slapd_conf_head {
	my ($d, @schemas) = @_;
	my $conf = join('', map { m{/} ? "include $_\n" : "include $schemas/$_.schema\n" } @schemas);
	$conf .= "pidfile $d/slapd.pid\n";
	$conf .= "modulepath $modules\nmoduleload back_mdb\n" if $modules;
	return $conf;
}

my %running;
my $test_pid = $$;
END {
	local $?;
	if ($$ == $test_pid) {
		for my $pid (keys %running) {
			kill 'CONT', $pid;
			kill 'TERM', $pid;
		}
	}
}

# Starts slapd with $d/slapd.conf on the URLs given; waits until it listens on $port. Its pid.
sub slapd_run {
	my ($d, $urls, $port) = @_;
	my ($rc, $out) = run_tool($slapd, '-f', "$d/slapd.conf", '-h', $urls);
	die "slapd failed: $out\n" if $rc;
	wait_for(10, sub { -s "$d/slapd.pid" }) or die "slapd wrote no pid file\n";
	open my $fh, '<', "$d/slapd.pid" or die "slapd.pid: $!\n";
	my ($pid) = <$fh> =~ /(\d+)/;
	close $fh;
	$running{$pid} = 1;
	wait_for(10, sub { IO::Socket::INET->new("127.0.0.1:$port") }) or die "slapd not listening\n";
	return $pid;
}

# Stops the slapd of $d (started by slapd_run, $pid), stopped by SIGSTOP or not.
sub slapd_kill {
	my ($d, $pid) = @_;
	return unless $pid;
	kill 'CONT', $pid;
	kill 'TERM', $pid;
	wait_for(10, sub { !kill 0, $pid }) or kill 'KILL', $pid;
	unlink "$d/slapd.pid";
	delete $running{$pid};
}

1;
