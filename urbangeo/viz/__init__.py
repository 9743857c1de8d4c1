"""What the user looks at: interactive folium maps and static plots of a run's products."""
