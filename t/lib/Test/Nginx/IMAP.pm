package Test::Nginx::IMAP;

# IMAP client for tests (same API as the official suite's Test::Nginx::IMAP).

use warnings;
use strict;

use base qw/ Test::Nginx::Mail /;
use Test::More qw//;

sub new {
	my ($class, %args) = @_;
	return $class->connect_client(8143, %args);
}

sub read {
	my ($self) = @_;
	my $line = $self->getline();
	# IMAP: skip untagged lines only when asked via check/ok; read returns the raw line
	return $line;
}

sub ok {
	my $self = shift;
	my $line;
	# skip untagged (*) responses; the tagged one decides
	do { $line = $self->read() } while defined $line and $line =~ /^\* /;
	Test::More->builder->like(defined $line ? $line : '', qr/^\S+ OK/, @_);
}

1;
