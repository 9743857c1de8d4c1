"""OpenStreetMap tag values grouped into the words an OSM caption uses."""

from __future__ import annotations

LANDUSE_WORDS = {
    "residential": "residential housing",
    "apartments": "residential housing",
    "commercial": "commercial premises",
    "retail": "retail and shopping",
    "industrial": "industrial sites",
    "port": "port facilities",
    "railway": "railway land",
    "construction": "construction sites",
    "brownfield": "vacant brownfield land",
    "greenfield": "undeveloped land",
    "farmland": "farmland",
    "farmyard": "farmyards",
    "meadow": "meadows",
    "orchard": "orchards",
    "allotments": "allotment gardens",
    "greenhouse_horticulture": "greenhouses",
    "forest": "woodland",
    "wood": "woodland",
    "scrub": "scrubland",
    "heath": "heath",
    "wetland": "wetland",
    "grass": "lawns",
    "village_green": "lawns",
    "recreation_ground": "recreation grounds",
    "park": "parks",
    "garden": "gardens",
    "playground": "playgrounds",
    "pitch": "sports pitches",
    "sports_centre": "sports facilities",
    "stadium": "sports facilities",
    "cemetery": "a cemetery",
    "religious": "religious grounds",
    "military": "military land",
    "education": "school grounds",
    "institutional": "institutional grounds",
    "water": "water",
    "basin": "water",
    "reservoir": "water",
}
GREEN = {
    "forest", "wood", "scrub", "heath", "grass", "village_green", "recreation_ground", "park",
    "garden", "meadow", "orchard", "allotments", "cemetery", "wetland",
}  # fmt: skip
WATER = {"water", "basin", "reservoir", "riverbank"}
ROAD_CLASSES = {
    "motorway": "motorways", "motorway_link": "motorways", "trunk": "highways",
    "trunk_link": "highways", "primary": "main roads", "primary_link": "main roads",
    "secondary": "main roads", "secondary_link": "main roads", "tertiary": "collector streets",
    "tertiary_link": "collector streets", "residential": "residential streets",
    "living_street": "residential streets", "unclassified": "minor roads",
    "service": "service roads", "track": "tracks", "footway": "footpaths",
    "path": "footpaths", "pedestrian": "pedestrian streets", "steps": "footpaths",
    "cycleway": "cycle paths", "bridleway": "footpaths",
}  # fmt: skip
BUILDING_WORDS = {
    "residential": "residential buildings", "apartments": "apartment blocks",
    "house": "houses", "detached": "detached houses", "semidetached_house": "houses",
    "terrace": "terraced houses", "commercial": "commercial buildings",
    "retail": "shops", "office": "office buildings", "industrial": "industrial buildings",
    "warehouse": "warehouses", "garage": "garages", "garages": "garages",
    "public": "public buildings", "school": "schools", "kindergarten": "kindergartens",
    "university": "university buildings", "hospital": "hospital buildings",
    "church": "churches", "chapel": "churches", "cathedral": "churches",
    "hotel": "hotels", "train_station": "station buildings", "shed": "sheds",
    "roof": "canopies", "greenhouse": "greenhouses", "farm_auxiliary": "farm buildings",
    "barn": "barns", "civic": "civic buildings", "government": "government buildings",
}  # fmt: skip
AMENITY_WORDS = {
    "restaurant": "restaurants", "cafe": "cafes", "fast_food": "fast-food outlets",
    "pub": "pubs", "bar": "bars", "bank": "banks", "pharmacy": "pharmacies",
    "school": "schools", "kindergarten": "kindergartens", "library": "libraries",
    "parking": "car parks", "bicycle_parking": "bicycle stands", "fuel": "petrol stations",
    "place_of_worship": "places of worship", "post_office": "post offices",
    "hospital": "hospitals", "clinic": "clinics", "doctors": "doctors' surgeries",
    "dentist": "dentists", "bus_station": "bus stations", "theatre": "theatres",
    "cinema": "cinemas", "townhall": "a town hall", "police": "a police station",
    "marketplace": "a marketplace", "university": "university facilities",
    "bench": "benches", "toilets": "public toilets", "recycling": "recycling points",
    "ice_cream": "ice-cream stands", "nightclub": "nightclubs", "car_wash": "car washes",
    "community_centre": "community centres", "arts_centre": "arts centres",
}  # fmt: skip
SHOP_WORDS = {
    "supermarket": "supermarkets", "convenience": "convenience stores",
    "clothes": "clothing shops", "hairdresser": "hairdressers", "bakery": "bakeries",
    "kiosk": "kiosks", "car": "car dealers", "car_repair": "car repair shops",
    "jewelry": "jewellers", "beauty": "beauty salons", "books": "bookshops",
    "florist": "florists", "furniture": "furniture stores", "hardware": "hardware stores",
    "mall": "a shopping mall", "department_store": "department stores",
}  # fmt: skip
#: Street furniture: counted, but too small to shape a caption of the area.
MINOR_AMENITIES = {
    "bench", "waste_basket", "vending_machine", "post_box", "telephone", "drinking_water",
    "bicycle_parking", "recycling", "clock", "atm", "parking_entrance", "charging_station",
}  # fmt: skip
#: Amenities that make a place commercial (with every shop).
COMMERCIAL = {
    "restaurant", "cafe", "fast_food", "pub", "bar", "bank", "pharmacy", "marketplace",
    "nightclub", "ice_cream", "cinema", "theatre", "fuel", "car_wash",
}  # fmt: skip
