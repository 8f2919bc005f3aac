// `certconnector status --fleet` as text: the "fleet" object of the status document
// (InstanceRegistry::status) for a person.
#pragma once

#include <boost/json/object.hpp>

#include <ostream>

namespace certconn::host {

void print_fleet(std::ostream& out, const boost::json::object& fleet);

}  // namespace certconn::host
