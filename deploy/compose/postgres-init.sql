-- One database per service: no service reads another's tables.
CREATE DATABASE identity;
CREATE DATABASE catalog;
CREATE DATABASE feed;
CREATE DATABASE recommender;
